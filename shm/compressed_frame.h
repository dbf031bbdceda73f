// shm/compressed_frame.h — compressed values as the Python client stores
// them, and their native decoding: one definition for the client's native
// module (client-py/native/compression.cc) and the CLI's `nearcache get`
// (daemon/cli/compressed.cc). Here because shm/ is the one folder both build
// from (the client through native/shm, regular files in its sdist). Header
// only, and included by those two files only: the shm reader and writer stay
// free of the codec libraries.
//
// Flags bits 1..3 ((flags & 0x0E) >> 1) hold the codec; 0 = not compressed.
// The value is then a frame: 0xC1 (a byte msgpack never uses, so a reader
// that ignores the flags fails to decode it instead of misreading it), the
// uncompressed length as 4 bytes big-endian, and the codec's output. zlib,
// zstd and lz4 are native; lzma and a configured class's codec are the Python
// side's (nearcache/compression.py). Keep in sync with that file,
// doc/protocol.md and client-py/README.md ("Entry flags").
#pragma once

#include <lz4.h>
#include <zlib.h>
#include <zstd.h>

#include <climits>
#include <cstddef>
#include <cstdint>

namespace nearcache::compressed {

enum Codec : int { CODEC_NONE = 0, CODEC_ZLIB = 1, CODEC_ZSTD = 2, CODEC_LZ4 = 3, CODEC_LZMA = 4, CODEC_CLASS = 5 };
constexpr int kCodecShift = 1;
constexpr int kCodecMask = 0x0E;
constexpr uint8_t kFrameMarker = 0xC1;
constexpr size_t kFrameHeader = 5;
constexpr uint64_t kMaxUncompressed = uint64_t(1) << 30;  // a larger header is corrupt, not allocated

inline int codec_of(uint64_t flags) { return int((flags & kCodecMask) >> kCodecShift); }
inline bool codec_native(int codec) { return codec == CODEC_ZLIB || codec == CODEC_ZSTD || codec == CODEC_LZ4; }

// "zlib", "zstd", "lz4", "lzma", "class"; nullptr for a reserved number.
inline const char* codec_name(int codec) {
  switch (codec) {
    case CODEC_ZLIB: return "zlib";
    case CODEC_ZSTD: return "zstd";
    case CODEC_LZ4: return "lz4";
    case CODEC_LZMA: return "lzma";
    case CODEC_CLASS: return "class";
  }
  return nullptr;
}

enum class Header { ok, not_a_frame, too_large };

// The uncompressed length the frame p[0..n) announces, into *len.
inline Header read_header(const uint8_t* p, size_t n, uint64_t* len) {
  if (n < kFrameHeader || p[0] != kFrameMarker) return Header::not_a_frame;
  *len = uint64_t(p[1]) << 24 | uint64_t(p[2]) << 16 | uint64_t(p[3]) << 8 | uint64_t(p[4]);
  return *len > kMaxUncompressed ? Header::too_large : Header::ok;
}

// The header of a frame of n uncompressed bytes, into dst[0..kFrameHeader).
inline void write_header(uint8_t* dst, uint64_t n) {
  dst[0] = kFrameMarker;
  dst[1] = uint8_t(n >> 24);
  dst[2] = uint8_t(n >> 16);
  dst[3] = uint8_t(n >> 8);
  dst[4] = uint8_t(n);
}

// Whether a native codec's body of n bytes can hold len uncompressed bytes,
// so that a damaged header never makes a reader allocate more than the codec
// can produce (zlib expands at most ~1032:1, an lz4 block ~255:1; a zstd
// frame states its own size).
inline bool plausible(int codec, const uint8_t* body, size_t n, uint64_t len) {
  switch (codec) {
    case CODEC_ZLIB: return len <= n * 1032 + 64;
    case CODEC_LZ4: return len <= n * 255 + 64;
    case CODEC_ZSTD: return ZSTD_getFrameContentSize(body, n) == len;
  }
  return false;
}

// A native codec's body of n bytes decompressed into dst[0..len): whether it
// gave exactly len bytes (false for a codec that is not native).
inline bool decompress_body(int codec, const uint8_t* body, size_t n, char* dst, size_t len) {
  switch (codec) {
    case CODEC_ZLIB: {
      uLongf got = uLongf(len);
      return uncompress(reinterpret_cast<Bytef*>(dst), &got, body, uLong(n)) == Z_OK && got == uLongf(len);
    }
    case CODEC_ZSTD: {
      const size_t got = ZSTD_decompress(dst, len, body, n);
      return !ZSTD_isError(got) && got == len;
    }
    case CODEC_LZ4:
      return n <= size_t(INT_MAX) &&
             LZ4_decompress_safe(reinterpret_cast<const char*>(body), dst, int(n), int(len)) == int(len);
  }
  return false;
}

}  // namespace nearcache::compressed
