// client-py/native/compression.cc — the native codecs of compressed values
// (compression.h): zlib, zstd and lz4 frames, made here, checked and decoded
// by compressed_frame.h.
#include "compression.h"

namespace nearcache::py {

namespace {

PyObject* corrupt(const char* what) {
  PyErr_Format(PyExc_ValueError, "nearcache: corrupt compressed value (%s)", what);
  return nullptr;
}

}  // namespace

Py_ssize_t frame_length(const uint8_t* p, size_t n) {
  uint64_t len = 0;
  switch (read_header(p, n, &len)) {
    case Header::not_a_frame: corrupt("no frame header"); return -1;
    case Header::too_large: corrupt("length over 1 GiB"); return -1;
    case Header::ok: break;
  }
  return Py_ssize_t(len);
}

PyObject* decompress_frame(int codec, const uint8_t* p, size_t n) {
  const Py_ssize_t len = frame_length(p, n);
  if (len < 0) return nullptr;
  const uint8_t* src = p + kFrameHeader;
  const size_t sn = n - kFrameHeader;
  if (codec_native(codec) && !plausible(codec, src, sn, uint64_t(len)))
    return corrupt("length header larger than the data can hold");
  PyObject* out = PyBytes_FromStringAndSize(nullptr, len);
  if (!out) return nullptr;
  if (!codec_native(codec)) {
    Py_DECREF(out);
    PyErr_Format(PyExc_ValueError, "nearcache: value compressed with codec %d, which this reader lacks", codec);
    return nullptr;
  }
  if (!decompress_body(codec, src, sn, PyBytes_AS_STRING(out), size_t(len))) {
    Py_DECREF(out);
    return corrupt(codec_name(codec));
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
  write_header(dst, n);
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
