// client-py/native/compression.h — compressed values: the codec number in the
// entry flags, the frame, and the codecs done natively (zlib, zstd, lz4), so
// that a hit decompresses without a Python call. lzma and a configured
// class's codec are the Python side's (nearcache/compression.py).
//
// The flags bits, the frame and its native decoding are compressed_frame.h's
// (the repository's shm/, shared with the CLI's `nearcache get`); this file
// makes Python bytes and exceptions of them.
#pragma once

#include "compressed_frame.h"  // native/shm
#include "state.h"

namespace nearcache::py {

// CODEC_*, kCodecMask, kCodecShift, kFrameMarker, kFrameHeader,
// kMaxUncompressed, codec_of, codec_native.
using namespace nearcache::compressed;

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
