// client-py/native/encoder.cc — the msgpack encoder behind packb and
// CacheCore._nc_pack: exact built-in types by identity, the extension types
// (tuple, set, frozenset, datetime family, Decimal, UUID, big int), then the
// fallback for everything else.
#include "encoder.h"

#include <datetime.h>

#include <cstring>
#include <initializer_list>

namespace nearcache::py {
namespace {

struct Buf {
  char* p = nullptr;
  size_t n = 0, cap = 0;
  ~Buf() { PyMem_Free(p); }
  bool reserve(size_t extra) {
    if (n + extra <= cap) return true;
    size_t c = cap ? cap * 2 : 256;
    while (c < n + extra) c *= 2;
    char* q = static_cast<char*>(PyMem_Realloc(p, c));
    if (!q) {
      PyErr_NoMemory();
      return false;
    }
    p = q;
    cap = c;
    return true;
  }
  bool put(const void* d, size_t len) {
    if (!reserve(len)) return false;
    std::memcpy(p + n, d, len);
    n += len;
    return true;
  }
  bool byte(uint8_t b) { return put(&b, 1); }
  bool be(uint8_t tag, uint64_t v, int bytes) {
    if (!reserve(1 + bytes)) return false;
    p[n++] = char(tag);
    for (int i = bytes - 1; i >= 0; --i) p[n++] = char((v >> (8 * i)) & 0xff);
    return true;
  }
};

bool enc_uint(Buf& b, uint64_t v) {
  if (v < 128) return b.byte(uint8_t(v));
  if (v <= 0xff) return b.be(0xcc, v, 1);
  if (v <= 0xffff) return b.be(0xcd, v, 2);
  if (v <= 0xffffffffULL) return b.be(0xce, v, 4);
  return b.be(0xcf, v, 8);
}

bool enc_int(Buf& b, int64_t v) {
  if (v >= 0) return enc_uint(b, uint64_t(v));
  if (v >= -32) return b.byte(uint8_t(int8_t(v)));
  if (v >= -128) return b.be(0xd0, uint64_t(v) & 0xff, 1);
  if (v >= -32768) return b.be(0xd1, uint64_t(v) & 0xffff, 2);
  if (v >= -2147483648LL) return b.be(0xd2, uint64_t(v) & 0xffffffffULL, 4);
  return b.be(0xd3, uint64_t(v), 8);
}

// The length forms of one msgpack family: a fix form for n < fix_limit
// (fix_limit 0: none), then 8-bit (t8 0: none), 16-bit and 32-bit lengths.
struct LenForms {
  uint8_t fix;
  size_t fix_limit;
  uint8_t t8, t16, t32;
  const char* what;  // for "... too long for msgpack"
};
constexpr LenForms kStr{0xa0, 32, 0xd9, 0xda, 0xdb, "string"};
constexpr LenForms kBin{0, 0, 0xc4, 0xc5, 0xc6, "bytes"};
constexpr LenForms kArray{0x90, 16, 0, 0xdc, 0xdd, "sequence"};
constexpr LenForms kMap{0x80, 16, 0, 0xde, 0xdf, "dict"};

// A template on the forms, so that each family's branches fold to constants.
template <const LenForms& f>
bool enc_len(Buf& b, size_t n) {
  if constexpr (f.fix_limit > 0)
    if (n < f.fix_limit) return b.byte(uint8_t(f.fix | n));
  if (f.t8 && n <= 0xff) return b.be(f.t8, n, 1);
  if (n <= 0xffff) return b.be(f.t16, n, 2);
  if (n <= 0xffffffffULL) return b.be(f.t32, n, 4);
  PyErr_Format(PyExc_ValueError, "%s too long for msgpack", f.what);
  return false;
}

bool enc_str(Buf& b, const char* s, size_t len) { return enc_len<kStr>(b, len) && b.put(s, len); }
bool enc_bin(Buf& b, const char* s, size_t len) { return enc_len<kBin>(b, len) && b.put(s, len); }
bool enc_array_header(Buf& b, size_t n) { return enc_len<kArray>(b, n); }

// A str object as msgpack str.
bool enc_unicode(Buf& b, PyObject* o) {
  Py_ssize_t n;
  const char* s = PyUnicode_AsUTF8AndSize(o, &n);
  return s && enc_str(b, s, size_t(n));
}

// An extension value is written as a 6-byte placeholder, its payload, then the
// smallest header that fits (the payload moves down when the header is shorter).
struct ExtMark {
  size_t at;
};
bool ext_begin(Buf& b, ExtMark* m) {
  if (!b.reserve(6)) return false;
  m->at = b.n;
  b.n += 6;
  return true;
}
bool ext_end(Buf& b, const ExtMark& m, int8_t code) {
  const size_t start = m.at + 6, len = b.n - start;
  uint8_t h[6];
  int hl;
  if (len == 1 || len == 2 || len == 4 || len == 8 || len == 16) {
    h[0] = len == 1 ? 0xd4 : len == 2 ? 0xd5 : len == 4 ? 0xd6 : len == 8 ? 0xd7 : 0xd8;
    h[1] = uint8_t(code);
    hl = 2;
  } else if (len <= 0xff) {
    h[0] = 0xc7; h[1] = uint8_t(len); h[2] = uint8_t(code);
    hl = 3;
  } else if (len <= 0xffff) {
    h[0] = 0xc8; h[1] = uint8_t(len >> 8); h[2] = uint8_t(len); h[3] = uint8_t(code);
    hl = 4;
  } else if (len <= 0xffffffffULL) {
    h[0] = 0xc9; h[1] = uint8_t(len >> 24); h[2] = uint8_t(len >> 16); h[3] = uint8_t(len >> 8);
    h[4] = uint8_t(len); h[5] = uint8_t(code);
    hl = 6;
  } else {
    PyErr_SetString(PyExc_ValueError, "extension value too long for msgpack");
    return false;
  }
  if (hl < 6) std::memmove(b.p + m.at + hl, b.p + start, len);
  std::memcpy(b.p + m.at, h, size_t(hl));
  b.n = m.at + size_t(hl) + len;
  return true;
}

bool ext_raw(Buf& b, int8_t code, const char* data, size_t len) {
  ExtMark m;
  return ext_begin(b, &m) && b.put(data, len) && ext_end(b, m, code);
}

bool enc(Buf& b, PyObject* o, PyObject* fallback, int depth);

bool enc_seq_items(Buf& b, PyObject* const* items, Py_ssize_t n, PyObject* fallback, int depth) {
  if (!enc_array_header(b, size_t(n))) return false;
  for (Py_ssize_t i = 0; i < n; ++i)
    if (!enc(b, items[i], fallback, depth + 1)) return false;
  return true;
}

bool enc_set(Buf& b, PyObject* o, PyObject* fallback, int depth) {
  if (!enc_array_header(b, size_t(PySet_GET_SIZE(o)))) return false;
  Py_ssize_t pos = 0;
  PyObject* item;
  Py_hash_t hash;
  while (_PySet_NextEntry(o, &pos, &item, &hash))
    if (!enc(b, item, fallback, depth + 1)) return false;
  return true;
}

// Microseconds of a timedelta (tz offsets are within a day, so no overflow).
int64_t delta_us(PyObject* d) {
  return (int64_t(PyDateTime_DELTA_GET_DAYS(d)) * 86400 + PyDateTime_DELTA_GET_SECONDS(d)) * 1000000 +
         PyDateTime_DELTA_GET_MICROSECONDS(d);
}

// tzinfo: nil (naive) | int offset_us (datetime.timezone, default name) |
// [offset_us, name] (datetime.timezone with a name) | str (zoneinfo key).
// Returns 1 written, 0 not representable (caller falls back), -1 error.
int enc_tz(Buf& b, PyObject* tz) {
  if (tz == Py_None) return b.byte(0xc0) ? 1 : -1;
  if (tz == PyDateTime_TimeZone_UTC) return b.byte(0) ? 1 : -1;
  if (Py_TYPE(tz) == (PyTypeObject*)g_timezone_type) {
    PyObject* args = PyObject_CallMethodNoArgs(tz, s_getinitargs);
    if (!args) return -1;
    int r = -1;
    if (PyTuple_Check(args) && PyTuple_GET_SIZE(args) >= 1 && PyDelta_Check(PyTuple_GET_ITEM(args, 0))) {
      int64_t us = delta_us(PyTuple_GET_ITEM(args, 0));
      if (PyTuple_GET_SIZE(args) == 1) r = enc_int(b, us) ? 1 : -1;
      else r = (enc_array_header(b, 2) && enc_int(b, us) && enc_unicode(b, PyTuple_GET_ITEM(args, 1))) ? 1 : -1;
    } else {
      r = 0;
    }
    Py_DECREF(args);
    return r;
  }
  PyObject* zoneinfo = zoneinfo_type();
  if (!zoneinfo) return -1;
  if (Py_TYPE(tz) == (PyTypeObject*)zoneinfo) {
    PyObject* key = PyObject_GetAttr(tz, s_key);
    if (!key) return -1;
    int r = PyUnicode_Check(key) ? (enc_unicode(b, key) ? 1 : -1) : 0;
    Py_DECREF(key);
    return r;
  }
  return 0;
}

bool enc_fallback(Buf& b, PyObject* o, PyObject* fallback) {
  if (!fallback || fallback == Py_None) {
    PyErr_Format(PyExc_TypeError, "nearcache cannot serialize a value of type %s without pickle",
                 Py_TYPE(o)->tp_name);
    return false;
  }
  PyObject* r = PyObject_CallOneArg(fallback, o);
  if (!r) return false;
  if (!PyBytes_Check(r)) {
    Py_DECREF(r);
    PyErr_SetString(PyExc_TypeError, "nearcache: the serializer fallback must return bytes");
    return false;
  }
  bool ok = ext_raw(b, EXT_PICKLE, PyBytes_AS_STRING(r), size_t(PyBytes_GET_SIZE(r)));
  Py_DECREF(r);
  return ok;
}

// Starts a datetime-family extension: the placeholder, then an array of
// `elems` whose leading integer fields are `ints` (a tzinfo may follow).
bool ext_fields(Buf& b, ExtMark* m, size_t elems, std::initializer_list<int64_t> ints) {
  if (!ext_begin(b, m) || !enc_array_header(b, elems)) return false;
  for (int64_t v : ints)
    if (!enc_int(b, v)) return false;
  return true;
}

// Ends a datetime or time with its tzinfo. When the tzinfo is not
// representable the value is taken back out and *done is false.
bool ext_end_with_tz(Buf& b, const ExtMark& m, PyObject* tz, int8_t code, bool* done) {
  int r = enc_tz(b, tz);
  if (r < 0) return false;
  if (r == 0) {
    b.n = m.at;
    *done = false;
    return true;
  }
  return ext_end(b, m, code);
}

// Returns false on error; *done = false when `o` is not of the datetime
// family or its tz is not representable (the caller falls back).
bool enc_datetime_like(Buf& b, PyObject* o, bool* done) {
  ExtMark m;
  *done = true;
  if (PyDateTime_CheckExact(o)) {
    return ext_fields(b, &m, 9,
                      {PyDateTime_GET_YEAR(o), PyDateTime_GET_MONTH(o), PyDateTime_GET_DAY(o),
                       PyDateTime_DATE_GET_HOUR(o), PyDateTime_DATE_GET_MINUTE(o), PyDateTime_DATE_GET_SECOND(o),
                       PyDateTime_DATE_GET_MICROSECOND(o), PyDateTime_DATE_GET_FOLD(o)}) &&
           ext_end_with_tz(b, m, PyDateTime_DATE_GET_TZINFO(o), EXT_DATETIME, done);
  }
  if (PyDate_CheckExact(o)) {
    return ext_fields(b, &m, 3, {PyDateTime_GET_YEAR(o), PyDateTime_GET_MONTH(o), PyDateTime_GET_DAY(o)}) &&
           ext_end(b, m, EXT_DATE);
  }
  if (PyTime_CheckExact(o)) {
    return ext_fields(b, &m, 6,
                      {PyDateTime_TIME_GET_HOUR(o), PyDateTime_TIME_GET_MINUTE(o), PyDateTime_TIME_GET_SECOND(o),
                       PyDateTime_TIME_GET_MICROSECOND(o), PyDateTime_TIME_GET_FOLD(o)}) &&
           ext_end_with_tz(b, m, PyDateTime_TIME_GET_TZINFO(o), EXT_TIME, done);
  }
  if (PyDelta_CheckExact(o)) {
    return ext_fields(b, &m, 3,
                      {PyDateTime_DELTA_GET_DAYS(o), PyDateTime_DELTA_GET_SECONDS(o),
                       PyDateTime_DELTA_GET_MICROSECONDS(o)}) &&
           ext_end(b, m, EXT_TIMEDELTA);
  }
  *done = false;
  return true;
}

bool enc_via_str(Buf& b, PyObject* o, int8_t code) {
  PyObject* s = PyObject_Str(o);
  if (!s) return false;
  Py_ssize_t n;
  const char* u = PyUnicode_AsUTF8AndSize(s, &n);
  bool ok = u && ext_raw(b, code, u, size_t(n));
  Py_DECREF(s);
  return ok;
}

bool enc(Buf& b, PyObject* o, PyObject* fallback, int depth) {
  if (depth > kMaxDepth) {
    PyErr_SetString(PyExc_ValueError, "nearcache: value nested too deeply");
    return false;
  }
  PyTypeObject* t = Py_TYPE(o);
  if (o == Py_None) return b.byte(0xc0);
  if (o == Py_True) return b.byte(0xc3);
  if (o == Py_False) return b.byte(0xc2);
  if (t == &PyLong_Type) {
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (!overflow) {
      if (v == -1 && PyErr_Occurred()) return false;
      return enc_int(b, v);
    }
    if (overflow > 0) {
      unsigned long long u = PyLong_AsUnsignedLongLong(o);
      if (!(u == (unsigned long long)-1 && PyErr_Occurred())) return enc_uint(b, u);
      PyErr_Clear();
    }
    return enc_via_str(b, o, EXT_BIGINT);
  }
  if (t == &PyUnicode_Type) return enc_unicode(b, o);
  if (t == &PyBytes_Type) return enc_bin(b, PyBytes_AS_STRING(o), size_t(PyBytes_GET_SIZE(o)));
  if (t == &PyFloat_Type) {
    double d = PyFloat_AS_DOUBLE(o);
    uint64_t u;
    std::memcpy(&u, &d, 8);
    return b.be(0xcb, u, 8);
  }
  if (t == &PyDict_Type) {
    if (!enc_len<kMap>(b, size_t(PyDict_GET_SIZE(o)))) return false;
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(o, &pos, &k, &v)) {
      Py_INCREF(k);
      Py_INCREF(v);  // a fallback could mutate the dict
      bool ok = enc(b, k, fallback, depth + 1) && enc(b, v, fallback, depth + 1);
      Py_DECREF(k);
      Py_DECREF(v);
      if (!ok) return false;
    }
    return true;
  }
  if (t == &PyList_Type) {
    // Iterate by index: a fallback may run Python code that changes the list.
    if (!enc_array_header(b, size_t(PyList_GET_SIZE(o)))) return false;
    Py_ssize_t n = PyList_GET_SIZE(o);
    for (Py_ssize_t i = 0; i < n; ++i) {
      if (i >= PyList_GET_SIZE(o)) {
        PyErr_SetString(PyExc_RuntimeError, "list changed size during serialization");
        return false;
      }
      PyObject* it = PyList_GET_ITEM(o, i);
      Py_INCREF(it);
      bool ok = enc(b, it, fallback, depth + 1);
      Py_DECREF(it);
      if (!ok) return false;
    }
    return true;
  }
  if (t == &PyTuple_Type) {
    ExtMark m;
    return ext_begin(b, &m) && enc_seq_items(b, &PyTuple_GET_ITEM(o, 0), PyTuple_GET_SIZE(o), fallback, depth) &&
           ext_end(b, m, EXT_TUPLE);
  }
  if (t == &PySet_Type || t == &PyFrozenSet_Type) {
    ExtMark m;
    return ext_begin(b, &m) && enc_set(b, o, fallback, depth) &&
           ext_end(b, m, t == &PySet_Type ? EXT_SET : EXT_FROZENSET);
  }
  bool done = false;
  if (!enc_datetime_like(b, o, &done)) return false;
  if (done) return true;
  if (t == (PyTypeObject*)g_decimal_type) return enc_via_str(b, o, EXT_DECIMAL);
  if (t == (PyTypeObject*)g_uuid_type) {
    PyObject* bs = PyObject_GetAttr(o, s_bytes);
    if (!bs) return false;
    bool ok = PyBytes_Check(bs) && PyBytes_GET_SIZE(bs) == 16 &&
              ext_raw(b, EXT_UUID, PyBytes_AS_STRING(bs), 16);
    if (!ok && !PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "nearcache: UUID.bytes is not 16 bytes");
    Py_DECREF(bs);
    return ok;
  }
  return enc_fallback(b, o, fallback);
}

}  // namespace

int encoder_ready() {
  PyDateTime_IMPORT;
  return PyDateTimeAPI ? 0 : -1;
}

PyObject* packb_obj(PyObject* o, PyObject* fallback) {
  Buf b;
  if (!enc(b, o, fallback, 0)) return nullptr;
  return PyBytes_FromStringAndSize(b.p, Py_ssize_t(b.n));
}

}  // namespace nearcache::py
