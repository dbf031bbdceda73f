// daemon/cli/compressed.h — the Python client's compressed values, read by
// `nearcache get`: the codec number in entry flags bits 1..3 and the frame
// (0xC1, the uncompressed length as 4 bytes big-endian, the codec's output),
// both defined in shm/compressed_frame.h, which the client's native module
// decodes with too. zlib, zstd and lz4 are decompressed here; lzma and a
// COMPRESSOR class's codec are not (the CLI shows them as they are).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "compressed_frame.h"  // shm/

namespace nearcache::daemon {

// The codec in an entry's flags (0 none, 1 zlib, 2 zstd, 3 lz4, 4 lzma, 5 the
// COMPRESSOR class, 6-7 reserved) and whether this CLI decompresses it.
using compressed::codec_of;
using compressed::codec_native;
constexpr uint64_t kFlagCodecMask = compressed::kCodecMask;

// "zlib", "zstd", "lz4", "lzma", "class", or "codec N" for a reserved one.
std::string codec_name(int codec);

// The uncompressed length a frame announces, or -1 when `frame` is not one
// (no 0xC1 header, or a length over 1 GiB).
int64_t frame_length(std::string_view frame);

// The frame's payload into *out (checked against the announced length), or
// false with *err saying why: not a frame, a codec not done here, corrupt data.
bool decompress_frame(int codec, std::string_view frame, std::string* out, std::string* err);

}  // namespace nearcache::daemon
