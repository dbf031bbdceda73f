// client-py/native/decoder.cc — the msgpack decoder behind unpackb and every
// hit CacheCore decodes: the msgpack types, then nearcache's extension types
// (state.h). Every length is checked against the input before it is used.
#include "decoder.h"

#include <datetime.h>

#include <cstring>

namespace nearcache::py {
namespace {

enum class Kind { list, tuple, set, frozenset };

struct Dec {
  const uint8_t* p;
  const uint8_t* end;
};

PyObject* corrupt(const char* what) {
  PyErr_Format(PyExc_ValueError, "nearcache: corrupt value (%s)", what);
  return nullptr;
}

inline bool need(Dec& d, size_t n) { return size_t(d.end - d.p) >= n; }
inline uint64_t rd_be(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v = (v << 8) | p[i];
  return v;
}
// Reads a w-byte big-endian length or number; false when the input is short.
inline bool take_be(Dec& d, int w, uint64_t* out) {
  if (!need(d, size_t(w))) return false;
  *out = rd_be(d.p, w);
  d.p += w;
  return true;
}
// The next n bytes as a str, advancing past them.
inline PyObject* take_str(Dec& d, size_t n) {
  if (!need(d, n)) return corrupt("truncated str");
  PyObject* s = PyUnicode_DecodeUTF8(reinterpret_cast<const char*>(d.p), Py_ssize_t(n), nullptr);
  d.p += n;
  return s;
}

PyObject* dec(Dec& d, int depth);
PyObject* dec_ext(int8_t code, const uint8_t* p, size_t len, int depth);

PyObject* dec_array(Dec& d, size_t n, Kind kind, int depth) {
  // Each element needs at least one byte: reject absurd counts before allocating.
  if (n > size_t(d.end - d.p)) return corrupt("array length");
  if (kind == Kind::list || kind == Kind::tuple) {
    PyObject* r = kind == Kind::list ? PyList_New(Py_ssize_t(n)) : PyTuple_New(Py_ssize_t(n));
    if (!r) return nullptr;
    for (size_t i = 0; i < n; ++i) {
      PyObject* v = dec(d, depth + 1);
      if (!v) {
        Py_DECREF(r);
        return nullptr;
      }
      if (kind == Kind::list) PyList_SET_ITEM(r, Py_ssize_t(i), v);
      else PyTuple_SET_ITEM(r, Py_ssize_t(i), v);
    }
    return r;
  }
  PyObject* r = kind == Kind::set ? PySet_New(nullptr) : PyFrozenSet_New(nullptr);
  if (!r) return nullptr;
  for (size_t i = 0; i < n; ++i) {
    PyObject* v = dec(d, depth + 1);
    if (!v || PySet_Add(r, v) < 0) {
      Py_XDECREF(v);
      Py_DECREF(r);
      return nullptr;
    }
    Py_DECREF(v);
  }
  return r;
}

PyObject* dec_map(Dec& d, size_t n, int depth) {
  if (n > size_t(d.end - d.p) / 2) return corrupt("map length");
  PyObject* r = _PyDict_NewPresized(Py_ssize_t(n));
  if (!r) return nullptr;
  for (size_t i = 0; i < n; ++i) {
    PyObject* k = dec(d, depth + 1);
    if (!k) {
      Py_DECREF(r);
      return nullptr;
    }
    PyObject* v = dec(d, depth + 1);
    if (!v || PyDict_SetItem(r, k, v) < 0) {
      Py_DECREF(k);
      Py_XDECREF(v);
      Py_DECREF(r);
      return nullptr;
    }
    Py_DECREF(k);
    Py_DECREF(v);
  }
  return r;
}

PyObject* dec(Dec& d, int depth) {
  if (depth > kMaxDepth) return corrupt("nested too deeply");
  if (!need(d, 1)) return corrupt("truncated");
  const uint8_t t = *d.p++;
  if (t <= 0x7f) return PyLong_FromLong(t);
  if (t >= 0xe0) return PyLong_FromLong(int8_t(t));
  if ((t & 0xe0) == 0xa0) return take_str(d, t & 0x1f);
  if ((t & 0xf0) == 0x90) return dec_array(d, t & 0x0f, Kind::list, depth);
  if ((t & 0xf0) == 0x80) return dec_map(d, t & 0x0f, depth);
  uint64_t n;
  switch (t) {
    case 0xc0: Py_RETURN_NONE;
    case 0xc2: Py_RETURN_FALSE;
    case 0xc3: Py_RETURN_TRUE;
    case 0xc4: case 0xc5: case 0xc6: {
      if (!take_be(d, t == 0xc4 ? 1 : t == 0xc5 ? 2 : 4, &n) || !need(d, n)) return corrupt("truncated bin");
      PyObject* r = PyBytes_FromStringAndSize(reinterpret_cast<const char*>(d.p), Py_ssize_t(n));
      d.p += n;
      return r;
    }
    case 0xd9: case 0xda: case 0xdb:
      if (!take_be(d, t == 0xd9 ? 1 : t == 0xda ? 2 : 4, &n)) return corrupt("truncated str");
      return take_str(d, n);
    case 0xca: {
      if (!take_be(d, 4, &n)) return corrupt("truncated float");
      uint32_t u = uint32_t(n);
      float f;
      std::memcpy(&f, &u, 4);
      return PyFloat_FromDouble(f);
    }
    case 0xcb: {
      if (!take_be(d, 8, &n)) return corrupt("truncated float");
      double f;
      std::memcpy(&f, &n, 8);
      return PyFloat_FromDouble(f);
    }
    case 0xcc: case 0xcd: case 0xce: case 0xcf:
      if (!take_be(d, 1 << (t - 0xcc), &n)) return corrupt("truncated int");
      return PyLong_FromUnsignedLongLong(n);
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
      const int w = 1 << (t - 0xd0);
      if (!take_be(d, w, &n)) return corrupt("truncated int");
      int64_t s = w == 1 ? int8_t(n) : w == 2 ? int16_t(n) : w == 4 ? int32_t(n) : int64_t(n);
      return PyLong_FromLongLong(s);
    }
    case 0xdc: case 0xdd:
      if (!take_be(d, t == 0xdc ? 2 : 4, &n)) return corrupt("truncated array");
      return dec_array(d, n, Kind::list, depth);
    case 0xde: case 0xdf:
      if (!take_be(d, t == 0xde ? 2 : 4, &n)) return corrupt("truncated map");
      return dec_map(d, n, depth);
    case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8: {
      n = size_t(1) << (t - 0xd4);
      if (!need(d, 1 + n)) return corrupt("truncated ext");
      int8_t code = int8_t(d.p[0]);
      const uint8_t* p = d.p + 1;
      d.p += 1 + n;
      return dec_ext(code, p, n, depth);
    }
    case 0xc7: case 0xc8: case 0xc9: {
      const int w = t == 0xc7 ? 1 : t == 0xc8 ? 2 : 4;
      if (!need(d, size_t(w) + 1)) return corrupt("truncated ext");
      n = rd_be(d.p, w);
      int8_t code = int8_t(d.p[w]);
      d.p += w + 1;
      if (!need(d, n)) return corrupt("truncated ext");
      const uint8_t* p = d.p;
      d.p += n;
      return dec_ext(code, p, n, depth);
    }
    default:
      return corrupt("reserved msgpack type byte");
  }
}

// Decodes an ext payload that must be exactly one msgpack array of `want`
// elements into a list, whose first `nints` elements must be ints (into f).
PyObject* dec_fields(const uint8_t* p, size_t len, int depth, Py_ssize_t want, int nints, long* f,
                     const char* what) {
  Dec d{p, p + len};
  PyObject* v = dec(d, depth + 1);
  if (!v) return nullptr;
  if (d.p != d.end || !PyList_Check(v) || PyList_GET_SIZE(v) != want) {
    Py_DECREF(v);
    return corrupt("extension payload");
  }
  for (int i = 0; i < nints; ++i) {
    PyObject* o = PyList_GET_ITEM(v, i);
    if (PyLong_Check(o)) {
      f[i] = PyLong_AsLong(o);
      if (!(f[i] == -1 && PyErr_Occurred())) continue;
    }
    Py_DECREF(v);
    return PyErr_Occurred() ? nullptr : corrupt(what);
  }
  return v;
}

// The tz element of a datetime or time payload; new reference, nullptr on error.
PyObject* dec_tz(PyObject* tz) {
  if (tz == Py_None) Py_RETURN_NONE;
  if (PyLong_Check(tz) || PyList_Check(tz)) {
    PyObject* off = PyList_Check(tz) ? (PyList_GET_SIZE(tz) == 2 ? PyList_GET_ITEM(tz, 0) : nullptr) : tz;
    PyObject* name = PyList_Check(tz) ? PyList_GET_ITEM(tz, 1) : nullptr;
    if (!off || !PyLong_Check(off) || (name && !PyUnicode_Check(name))) return corrupt("tzinfo");
    long long us = PyLong_AsLongLong(off);
    if (us == -1 && PyErr_Occurred()) return nullptr;
    if (us == 0 && !name) return Py_NewRef(PyDateTime_TimeZone_UTC);
    long long days = us / 86400000000LL, rem = us % 86400000000LL;
    if (rem < 0) {
      rem += 86400000000LL;
      days -= 1;
    }
    PyObject* delta = PyDelta_FromDSU(int(days), int(rem / 1000000), int(rem % 1000000));
    if (!delta) return nullptr;
    PyObject* r = name ? PyTimeZone_FromOffsetAndName(delta, name) : PyTimeZone_FromOffset(delta);
    Py_DECREF(delta);
    return r;
  }
  if (PyUnicode_Check(tz)) {
    PyObject* zoneinfo = zoneinfo_type();
    return zoneinfo ? PyObject_CallOneArg(zoneinfo, tz) : nullptr;
  }
  return corrupt("tzinfo");
}

// A new bytes object holding an ext payload.
inline PyObject* payload_bytes(const uint8_t* p, size_t len) {
  return PyBytes_FromStringAndSize(reinterpret_cast<const char*>(p), Py_ssize_t(len));
}

PyObject* dec_ext(int8_t code, const uint8_t* p, size_t len, int depth) {
  switch (code) {
    case EXT_TUPLE: case EXT_SET: case EXT_FROZENSET: {
      Dec d{p, p + len};
      if (!need(d, 1)) return corrupt("extension payload");
      const uint8_t t = *d.p++;
      uint64_t n;
      if ((t & 0xf0) == 0x90) n = t & 0x0f;
      else if (!((t == 0xdc || t == 0xdd) && take_be(d, t == 0xdc ? 2 : 4, &n))) return corrupt("extension payload");
      Kind k = code == EXT_TUPLE ? Kind::tuple : code == EXT_SET ? Kind::set : Kind::frozenset;
      PyObject* r = dec_array(d, n, k, depth);
      if (r && d.p != d.end) {
        Py_DECREF(r);
        return corrupt("extension payload");
      }
      return r;
    }
    case EXT_DATETIME: case EXT_TIME: {
      const bool dt = code == EXT_DATETIME;
      const int ni = dt ? 8 : 5;
      long f[8];
      PyObject* a = dec_fields(p, len, depth, ni + 1, ni, f, "datetime field");
      if (!a) return nullptr;
      PyObject* tz = dec_tz(PyList_GET_ITEM(a, ni));
      Py_DECREF(a);
      if (!tz) return nullptr;
      PyObject* r =
          dt ? PyDateTimeAPI->DateTime_FromDateAndTimeAndFold(int(f[0]), int(f[1]), int(f[2]), int(f[3]), int(f[4]),
                                                             int(f[5]), int(f[6]), tz, int(f[7]),
                                                             PyDateTimeAPI->DateTimeType)
             : PyDateTimeAPI->Time_FromTimeAndFold(int(f[0]), int(f[1]), int(f[2]), int(f[3]), tz, int(f[4]),
                                                    PyDateTimeAPI->TimeType);
      Py_DECREF(tz);
      return r;
    }
    case EXT_DATE: case EXT_TIMEDELTA: {
      long f[3];
      PyObject* a = dec_fields(p, len, depth, 3, 3, f, "date field");
      if (!a) return nullptr;
      Py_DECREF(a);
      if (code == EXT_DATE) return PyDate_FromDate(int(f[0]), int(f[1]), int(f[2]));
      return PyDelta_FromDSU(int(f[0]), int(f[1]), int(f[2]));
    }
    case EXT_DECIMAL: case EXT_BIGINT: {
      PyObject* s = PyUnicode_DecodeASCII(reinterpret_cast<const char*>(p), Py_ssize_t(len), nullptr);
      if (!s) return nullptr;
      PyObject* r = code == EXT_DECIMAL ? PyObject_CallOneArg(g_decimal_type, s) : PyLong_FromUnicodeObject(s, 10);
      Py_DECREF(s);
      return r;
    }
    case EXT_UUID: {
      if (len != 16) return corrupt("uuid");
      PyObject* bs = payload_bytes(p, 16);
      if (!bs) return nullptr;
      PyObject* kw = PyDict_New();
      PyObject* args = PyTuple_New(0);
      PyObject* r = nullptr;
      if (kw && args && PyDict_SetItem(kw, s_bytes, bs) == 0) r = PyObject_Call(g_uuid_type, args, kw);
      Py_XDECREF(kw);
      Py_XDECREF(args);
      Py_DECREF(bs);
      return r;
    }
    case EXT_PICKLE: {
      PyObject* bs = payload_bytes(p, len);
      if (!bs) return nullptr;
      PyObject* r = PyObject_CallOneArg(g_pickle_loads, bs);
      Py_DECREF(bs);
      return r;
    }
    default:
      PyErr_Format(PyExc_ValueError, "nearcache: unknown msgpack extension type %d", int(code));
      return nullptr;
  }
}

}  // namespace

int decoder_ready() {
  PyDateTime_IMPORT;
  return PyDateTimeAPI ? 0 : -1;
}

PyObject* unpack_buf(const uint8_t* p, size_t len) {
  Dec d{p, p + len};
  PyObject* v = dec(d, 0);
  if (v && d.p != d.end) {
    Py_DECREF(v);
    return corrupt("extra bytes after the value");
  }
  return v;
}

}  // namespace nearcache::py
