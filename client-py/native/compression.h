// client-py/native/compression.h — compressed values: the codec number in the
// entry flags, the frame, and the codecs done natively (zlib, zstd, lz4), so
// that a hit decompresses without a Python call. lzma and a configured
// class's codec are the Python side's (nearcache/compression.py).
//
// Flags bits 1..3 ((flags & 0x0E) >> 1) hold the codec; 0 = not compressed.
// The value is then a frame: 0xC1 (a byte msgpack never uses, so a reader
// that ignores the flags fails to decode it instead of misreading it), the
// uncompressed length as 4 bytes big-endian, and the codec's output. Keep in
// sync with nearcache/compression.py, doc/protocol.md and client-py/README.md.
#pragma once

#include "state.h"

namespace nearcache::py {

enum Codec : int { CODEC_NONE = 0, CODEC_ZLIB = 1, CODEC_ZSTD = 2, CODEC_LZ4 = 3, CODEC_LZMA = 4, CODEC_CLASS = 5 };
constexpr int kCodecShift = 1;
constexpr int kCodecMask = 0x0E;
constexpr uint8_t kFrameMarker = 0xC1;
constexpr size_t kFrameHeader = 5;
constexpr size_t kMaxUncompressed = size_t(1) << 30;  // a larger header is corrupt, not allocated

inline int codec_of(uint8_t flags) { return (flags & kCodecMask) >> kCodecShift; }
inline bool codec_native(int codec) { return codec == CODEC_ZLIB || codec == CODEC_ZSTD || codec == CODEC_LZ4; }

// New bytes: the frame's uncompressed payload, checked against the frame's
// length. nullptr with ValueError set for a corrupt frame or a codec this
// file does not do (callers check codec_native first).
PyObject* decompress_frame(int codec, const uint8_t* p, size_t n);

// The uncompressed length a frame announces, or -1 (ValueError set) when p
// is not a frame.
Py_ssize_t frame_length(const uint8_t* p, size_t n);

// New bytes: a frame of p[0..n) compressed with codec at level (0 = the
// codec's default; lz4: the acceleration), or nullptr with an exception set.
PyObject* compress_frame(int codec, const uint8_t* p, size_t n, int level);

}  // namespace nearcache::py
