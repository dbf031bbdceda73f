// daemon/cli/compressed.h — the Python client's compressed values, read by
// `nearcache get`: the codec number in entry flags bits 1..3 and the frame
// (0xC1, the uncompressed length as 4 bytes big-endian, the codec's output).
// zlib, zstd and lz4 are decompressed here with the libraries the client's
// native module uses; lzma and a COMPRESSOR class's codec are not (the CLI
// shows them as they are). Keep in sync with client-py/native/compression.h
// and client-py/README.md ("Entry flags").
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace nearcache::daemon {

constexpr uint64_t kFlagCodecMask = 0x0E;

// The codec in an entry's flags: 0 none, 1 zlib, 2 zstd, 3 lz4, 4 lzma, 5 the
// COMPRESSOR class, 6-7 reserved.
inline int codec_of(uint64_t flags) { return int((flags & kFlagCodecMask) >> 1); }

// "zlib", "zstd", "lz4", "lzma", "class", or "codec N" for a reserved one.
std::string codec_name(int codec);

// Whether this CLI decompresses the codec (zlib, zstd, lz4).
inline bool codec_native(int codec) { return codec >= 1 && codec <= 3; }

// The uncompressed length a frame announces, or -1 when `frame` is not one
// (no 0xC1 header, or a length over 1 GiB).
int64_t frame_length(std::string_view frame);

// The frame's payload into *out (checked against the announced length), or
// false with *err saying why: not a frame, a codec not done here, corrupt data.
bool decompress_frame(int codec, std::string_view frame, std::string* out, std::string* err);

}  // namespace nearcache::daemon
