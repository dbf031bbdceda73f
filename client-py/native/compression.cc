// client-py/native/compression.cc — the native codecs of compressed values
// (compression.h): zlib, zstd and lz4 frames, made and checked.
#include "compression.h"

#include <lz4.h>
#include <zlib.h>
#include <zstd.h>

#include <climits>

namespace nearcache::py {

namespace {

PyObject* corrupt(const char* what) {
  PyErr_Format(PyExc_ValueError, "nearcache: corrupt compressed value (%s)", what);
  return nullptr;
}

}  // namespace

Py_ssize_t frame_length(const uint8_t* p, size_t n) {
  if (n < kFrameHeader || p[0] != kFrameMarker) {
    corrupt("no frame header");
    return -1;
  }
  const size_t len = size_t(p[1]) << 24 | size_t(p[2]) << 16 | size_t(p[3]) << 8 | size_t(p[4]);
  if (len > kMaxUncompressed) {
    corrupt("length over 1 GiB");
    return -1;
  }
  return Py_ssize_t(len);
}

namespace {

// Whether a frame's announced length is possible for its compressed size, so
// that a damaged header never makes a reader allocate more than the codec can
// produce (zlib expands at most ~1032:1, an lz4 block ~255:1; a zstd frame
// states its own size).
bool plausible(int codec, const uint8_t* src, size_t sn, size_t len) {
  switch (codec) {
    case CODEC_ZLIB: return len <= sn * 1032 + 64;
    case CODEC_LZ4: return len <= sn * 255 + 64;
    case CODEC_ZSTD: return ZSTD_getFrameContentSize(src, sn) == len;
  }
  return false;
}

}  // namespace

PyObject* decompress_frame(int codec, const uint8_t* p, size_t n) {
  const Py_ssize_t len = frame_length(p, n);
  if (len < 0) return nullptr;
  if (codec_native(codec) && !plausible(codec, p + kFrameHeader, n - kFrameHeader, size_t(len)))
    return corrupt("length header larger than the data can hold");
  PyObject* out = PyBytes_FromStringAndSize(nullptr, len);
  if (!out) return nullptr;
  char* dst = PyBytes_AS_STRING(out);
  const uint8_t* src = p + kFrameHeader;
  const size_t sn = n - kFrameHeader;
  bool ok = false;
  switch (codec) {
    case CODEC_ZLIB: {
      uLongf got = uLongf(len);
      ok = uncompress(reinterpret_cast<Bytef*>(dst), &got, src, uLong(sn)) == Z_OK && got == uLongf(len);
      break;
    }
    case CODEC_ZSTD: {
      const size_t got = ZSTD_decompress(dst, size_t(len), src, sn);
      ok = !ZSTD_isError(got) && got == size_t(len);
      break;
    }
    case CODEC_LZ4:
      ok = sn <= size_t(INT_MAX) &&
           LZ4_decompress_safe(reinterpret_cast<const char*>(src), dst, int(sn), int(len)) == int(len);
      break;
    default:
      Py_DECREF(out);
      PyErr_Format(PyExc_ValueError, "nearcache: value compressed with codec %d, which this reader lacks", codec);
      return nullptr;
  }
  if (!ok) {
    Py_DECREF(out);
    return corrupt(codec == CODEC_ZLIB ? "zlib" : codec == CODEC_ZSTD ? "zstd" : "lz4");
  }
  return out;
}

PyObject* compress_frame(int codec, const uint8_t* p, size_t n, int level) {
  if (n > kMaxUncompressed) {
    PyErr_SetString(PyExc_ValueError, "nearcache: value over 1 GiB is not compressed");
    return nullptr;
  }
  size_t bound;
  switch (codec) {
    case CODEC_ZLIB: bound = compressBound(uLong(n)); break;
    case CODEC_ZSTD: bound = ZSTD_compressBound(n); break;
    case CODEC_LZ4: bound = size_t(LZ4_compressBound(int(n))); break;
    default:
      PyErr_Format(PyExc_ValueError, "nearcache: codec %d is not native", codec);
      return nullptr;
  }
  PyObject* out = PyBytes_FromStringAndSize(nullptr, Py_ssize_t(kFrameHeader + bound));
  if (!out) return nullptr;
  auto* dst = reinterpret_cast<uint8_t*>(PyBytes_AS_STRING(out));
  dst[0] = kFrameMarker;
  dst[1] = uint8_t(n >> 24);
  dst[2] = uint8_t(n >> 16);
  dst[3] = uint8_t(n >> 8);
  dst[4] = uint8_t(n);
  uint8_t* body = dst + kFrameHeader;
  size_t got = 0;
  bool ok = false;
  switch (codec) {
    case CODEC_ZLIB: {
      uLongf dl = uLongf(bound);
      ok = compress2(body, &dl, p, uLong(n), level ? level : Z_DEFAULT_COMPRESSION) == Z_OK;
      got = dl;
      break;
    }
    case CODEC_ZSTD:
      got = ZSTD_compress(body, bound, p, n, level ? level : ZSTD_CLEVEL_DEFAULT);
      ok = !ZSTD_isError(got);
      break;
    case CODEC_LZ4: {
      const int r = LZ4_compress_fast(reinterpret_cast<const char*>(p), reinterpret_cast<char*>(body), int(n),
                                      int(bound), level > 0 ? level : 1);
      ok = r > 0;
      got = size_t(r);
      break;
    }
  }
  if (!ok) {
    Py_DECREF(out);
    PyErr_Format(PyExc_ValueError, "nearcache: codec %d failed to compress", codec);
    return nullptr;
  }
  if (_PyBytes_Resize(&out, Py_ssize_t(kFrameHeader + got)) < 0) return nullptr;
  return out;
}

}  // namespace nearcache::py
