// nearcache._native — the parts of the Python client that sit on the hit path.
//
//   Segment     the shared-memory reader (shm/reader.h) as a Python object
//   packb/unpackb  the value codec: msgpack plus nearcache's extension types
//                  (client-py/README.md documents them; codes below)
//   CacheCore   the C base of nearcache.django.NearCache: Django's default key
//               building and key validation, the lookup and the decoding of a
//               hit, all in one call with no Python frame in between
//
// Written against the CPython C API: it measured fastest on the hit path (see
// client-py/README.md). Everything here runs with the GIL held and never
// releases it, so a Segment is never re-mapped while another thread reads it.
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
#include <structmember.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include "reader.h"

namespace {

using nearcache::shm::Reader;
using nearcache::shm::ReaderOptions;
using nearcache::shm::ReadResult;
using nearcache::shm::ReadStatus;

// ---------------------------------------------------------------------------
// Extension type codes. Keep in sync with nearcache/serializer.py and
// client-py/README.md. 1..63 are language-neutral; 64.. are Python-only.
enum ExtCode : int8_t {
  EXT_TUPLE = 1,
  EXT_SET = 2,
  EXT_FROZENSET = 3,
  EXT_DATETIME = 4,
  EXT_DATE = 5,
  EXT_TIME = 6,
  EXT_TIMEDELTA = 7,
  EXT_DECIMAL = 8,
  EXT_UUID = 9,
  EXT_BIGINT = 10,
  EXT_PICKLE = 64,
};

// Entry flag bit: the value is not nearcache msgpack but the output of the
// cache's configured serializer (SERIALIZER option).
constexpr int FLAG_SERIALIZED = 0x01;

constexpr int kMaxDepth = 512;
constexpr size_t kDjangoMaxKeyLength = 250;  // django.core.cache.backends.base.MEMCACHE_MAX_KEY_LENGTH

// Module state (one interpreter).
PyObject* g_pickle_loads = nullptr;
PyObject* g_decimal_type = nullptr;
PyObject* g_uuid_type = nullptr;
PyObject* g_zoneinfo_type = nullptr;  // imported lazily
PyObject* g_timezone_type = nullptr;
PyObject* s_bytes = nullptr;          // "bytes"
PyObject* s_int = nullptr;            // "int"
PyObject* s_key = nullptr;            // "key"
PyObject* s_getinitargs = nullptr;    // "__getinitargs__"
PyObject* s_validate_key = nullptr;
PyObject* s_get_miss = nullptr;
PyObject* s_get_slow = nullptr;
PyObject* s_get_many_miss = nullptr;
PyObject* s_get_many_slow = nullptr;

// ---------------------------------------------------------------------------
// Encoder

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

bool enc_str(Buf& b, const char* s, size_t len) {
  bool ok;
  if (len < 32) ok = b.byte(uint8_t(0xa0 | len));
  else if (len <= 0xff) ok = b.be(0xd9, len, 1);
  else if (len <= 0xffff) ok = b.be(0xda, len, 2);
  else if (len <= 0xffffffffULL) ok = b.be(0xdb, len, 4);
  else {
    PyErr_SetString(PyExc_ValueError, "string too long for msgpack");
    return false;
  }
  return ok && b.put(s, len);
}

bool enc_bin(Buf& b, const char* s, size_t len) {
  bool ok;
  if (len <= 0xff) ok = b.be(0xc4, len, 1);
  else if (len <= 0xffff) ok = b.be(0xc5, len, 2);
  else if (len <= 0xffffffffULL) ok = b.be(0xc6, len, 4);
  else {
    PyErr_SetString(PyExc_ValueError, "bytes too long for msgpack");
    return false;
  }
  return ok && b.put(s, len);
}

bool enc_array_header(Buf& b, size_t n) {
  if (n < 16) return b.byte(uint8_t(0x90 | n));
  if (n <= 0xffff) return b.be(0xdc, n, 2);
  if (n <= 0xffffffffULL) return b.be(0xdd, n, 4);
  PyErr_SetString(PyExc_ValueError, "sequence too long for msgpack");
  return false;
}

bool enc_map_header(Buf& b, size_t n) {
  if (n < 16) return b.byte(uint8_t(0x80 | n));
  if (n <= 0xffff) return b.be(0xde, n, 2);
  if (n <= 0xffffffffULL) return b.be(0xdf, n, 4);
  PyErr_SetString(PyExc_ValueError, "dict too long for msgpack");
  return false;
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
      if (PyTuple_GET_SIZE(args) == 1) {
        r = enc_int(b, us) ? 1 : -1;
      } else {
        Py_ssize_t nl;
        const char* name = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(args, 1), &nl);
        r = (name && enc_array_header(b, 2) && enc_int(b, us) && enc_str(b, name, size_t(nl))) ? 1 : -1;
      }
    } else {
      r = 0;
    }
    Py_DECREF(args);
    return r;
  }
  if (!g_zoneinfo_type) {
    PyObject* m = PyImport_ImportModule("zoneinfo");
    if (!m) return -1;
    g_zoneinfo_type = PyObject_GetAttrString(m, "ZoneInfo");
    Py_DECREF(m);
    if (!g_zoneinfo_type) return -1;
  }
  if (Py_TYPE(tz) == (PyTypeObject*)g_zoneinfo_type) {
    PyObject* key = PyObject_GetAttr(tz, s_key);
    if (!key) return -1;
    int r = 0;
    if (PyUnicode_Check(key)) {
      Py_ssize_t nl;
      const char* s = PyUnicode_AsUTF8AndSize(key, &nl);
      r = (s && enc_str(b, s, size_t(nl))) ? 1 : -1;
    }
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

bool enc_datetime_like(Buf& b, PyObject* o, PyObject* fallback, bool* done) {
  // Returns false on error; *done = false when the tz is not representable.
  ExtMark m;
  size_t restart = b.n;
  *done = true;
  if (PyDateTime_CheckExact(o)) {
    if (!ext_begin(b, &m) || !enc_array_header(b, 9) || !enc_int(b, PyDateTime_GET_YEAR(o)) ||
        !enc_int(b, PyDateTime_GET_MONTH(o)) || !enc_int(b, PyDateTime_GET_DAY(o)) ||
        !enc_int(b, PyDateTime_DATE_GET_HOUR(o)) || !enc_int(b, PyDateTime_DATE_GET_MINUTE(o)) ||
        !enc_int(b, PyDateTime_DATE_GET_SECOND(o)) || !enc_int(b, PyDateTime_DATE_GET_MICROSECOND(o)) ||
        !enc_int(b, PyDateTime_DATE_GET_FOLD(o)))
      return false;
    int r = enc_tz(b, PyDateTime_DATE_GET_TZINFO(o));
    if (r < 0) return false;
    if (r == 0) {
      b.n = restart;
      *done = false;
      return true;
    }
    return ext_end(b, m, EXT_DATETIME);
  }
  if (PyDate_CheckExact(o)) {
    return ext_begin(b, &m) && enc_array_header(b, 3) && enc_int(b, PyDateTime_GET_YEAR(o)) &&
           enc_int(b, PyDateTime_GET_MONTH(o)) && enc_int(b, PyDateTime_GET_DAY(o)) && ext_end(b, m, EXT_DATE);
  }
  if (PyTime_CheckExact(o)) {
    if (!ext_begin(b, &m) || !enc_array_header(b, 6) || !enc_int(b, PyDateTime_TIME_GET_HOUR(o)) ||
        !enc_int(b, PyDateTime_TIME_GET_MINUTE(o)) || !enc_int(b, PyDateTime_TIME_GET_SECOND(o)) ||
        !enc_int(b, PyDateTime_TIME_GET_MICROSECOND(o)) || !enc_int(b, PyDateTime_TIME_GET_FOLD(o)))
      return false;
    int r = enc_tz(b, PyDateTime_TIME_GET_TZINFO(o));
    if (r < 0) return false;
    if (r == 0) {
      b.n = restart;
      *done = false;
      return true;
    }
    return ext_end(b, m, EXT_TIME);
  }
  if (PyDelta_CheckExact(o)) {
    return ext_begin(b, &m) && enc_array_header(b, 3) && enc_int(b, PyDateTime_DELTA_GET_DAYS(o)) &&
           enc_int(b, PyDateTime_DELTA_GET_SECONDS(o)) && enc_int(b, PyDateTime_DELTA_GET_MICROSECONDS(o)) &&
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
  if (t == &PyUnicode_Type) {
    Py_ssize_t n;
    const char* s = PyUnicode_AsUTF8AndSize(o, &n);
    return s && enc_str(b, s, size_t(n));
  }
  if (t == &PyBytes_Type) return enc_bin(b, PyBytes_AS_STRING(o), size_t(PyBytes_GET_SIZE(o)));
  if (t == &PyFloat_Type) {
    double d = PyFloat_AS_DOUBLE(o);
    uint64_t u;
    std::memcpy(&u, &d, 8);
    return b.be(0xcb, u, 8);
  }
  if (t == &PyDict_Type) {
    if (!enc_map_header(b, size_t(PyDict_GET_SIZE(o)))) return false;
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
  if (!enc_datetime_like(b, o, fallback, &done)) return false;
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

PyObject* packb_obj(PyObject* o, PyObject* fallback) {
  Buf b;
  if (!enc(b, o, fallback, 0)) return nullptr;
  return PyBytes_FromStringAndSize(b.p, Py_ssize_t(b.n));
}

// ---------------------------------------------------------------------------
// Decoder. Trusts nothing: every length is checked against the input.

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
  if ((t & 0xe0) == 0xa0) {
    size_t n = t & 0x1f;
    if (!need(d, n)) return corrupt("truncated str");
    PyObject* s = PyUnicode_DecodeUTF8(reinterpret_cast<const char*>(d.p), Py_ssize_t(n), nullptr);
    d.p += n;
    return s;
  }
  if ((t & 0xf0) == 0x90) return dec_array(d, t & 0x0f, Kind::list, depth);
  if ((t & 0xf0) == 0x80) return dec_map(d, t & 0x0f, depth);
  size_t n;
  int w;
  switch (t) {
    case 0xc0: Py_RETURN_NONE;
    case 0xc2: Py_RETURN_FALSE;
    case 0xc3: Py_RETURN_TRUE;
    case 0xc4: case 0xc5: case 0xc6: {
      w = t == 0xc4 ? 1 : t == 0xc5 ? 2 : 4;
      if (!need(d, w)) return corrupt("truncated bin");
      n = rd_be(d.p, w);
      d.p += w;
      if (!need(d, n)) return corrupt("truncated bin");
      PyObject* r = PyBytes_FromStringAndSize(reinterpret_cast<const char*>(d.p), Py_ssize_t(n));
      d.p += n;
      return r;
    }
    case 0xd9: case 0xda: case 0xdb: {
      w = t == 0xd9 ? 1 : t == 0xda ? 2 : 4;
      if (!need(d, w)) return corrupt("truncated str");
      n = rd_be(d.p, w);
      d.p += w;
      if (!need(d, n)) return corrupt("truncated str");
      PyObject* r = PyUnicode_DecodeUTF8(reinterpret_cast<const char*>(d.p), Py_ssize_t(n), nullptr);
      d.p += n;
      return r;
    }
    case 0xca: {
      if (!need(d, 4)) return corrupt("truncated float");
      uint32_t u = uint32_t(rd_be(d.p, 4));
      d.p += 4;
      float f;
      std::memcpy(&f, &u, 4);
      return PyFloat_FromDouble(f);
    }
    case 0xcb: {
      if (!need(d, 8)) return corrupt("truncated float");
      uint64_t u = rd_be(d.p, 8);
      d.p += 8;
      double f;
      std::memcpy(&f, &u, 8);
      return PyFloat_FromDouble(f);
    }
    case 0xcc: case 0xcd: case 0xce: case 0xcf: {
      w = 1 << (t - 0xcc);
      if (!need(d, w)) return corrupt("truncated int");
      uint64_t v = rd_be(d.p, w);
      d.p += w;
      return PyLong_FromUnsignedLongLong(v);
    }
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
      w = 1 << (t - 0xd0);
      if (!need(d, w)) return corrupt("truncated int");
      uint64_t v = rd_be(d.p, w);
      d.p += w;
      int64_t s = w == 1 ? int8_t(v) : w == 2 ? int16_t(v) : w == 4 ? int32_t(v) : int64_t(v);
      return PyLong_FromLongLong(s);
    }
    case 0xdc: case 0xdd:
      w = t == 0xdc ? 2 : 4;
      if (!need(d, w)) return corrupt("truncated array");
      n = rd_be(d.p, w);
      d.p += w;
      return dec_array(d, n, Kind::list, depth);
    case 0xde: case 0xdf:
      w = t == 0xde ? 2 : 4;
      if (!need(d, w)) return corrupt("truncated map");
      n = rd_be(d.p, w);
      d.p += w;
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
      w = t == 0xc7 ? 1 : t == 0xc8 ? 2 : 4;
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
// elements (want < 0: any length) into a list.
PyObject* dec_payload_array(const uint8_t* p, size_t len, int depth, Py_ssize_t want) {
  Dec d{p, p + len};
  PyObject* v = dec(d, depth + 1);
  if (!v) return nullptr;
  if (d.p != d.end || !PyList_Check(v) || (want >= 0 && PyList_GET_SIZE(v) != want)) {
    Py_DECREF(v);
    return corrupt("extension payload");
  }
  return v;
}

bool as_int(PyObject* list, Py_ssize_t i, long* out) {
  PyObject* o = PyList_GET_ITEM(list, i);
  if (!PyLong_Check(o)) return false;
  *out = PyLong_AsLong(o);
  return !(*out == -1 && PyErr_Occurred());
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
    if (!g_zoneinfo_type) {
      PyObject* m = PyImport_ImportModule("zoneinfo");
      if (!m) return nullptr;
      g_zoneinfo_type = PyObject_GetAttrString(m, "ZoneInfo");
      Py_DECREF(m);
      if (!g_zoneinfo_type) return nullptr;
    }
    return PyObject_CallOneArg(g_zoneinfo_type, tz);
  }
  return corrupt("tzinfo");
}

PyObject* dec_ext(int8_t code, const uint8_t* p, size_t len, int depth) {
  switch (code) {
    case EXT_TUPLE: case EXT_SET: case EXT_FROZENSET: {
      Dec d{p, p + len};
      if (!need(d, 1)) return corrupt("extension payload");
      const uint8_t t = *d.p++;
      size_t n;
      if ((t & 0xf0) == 0x90) n = t & 0x0f;
      else if ((t == 0xdc || t == 0xdd) && need(d, t == 0xdc ? 2 : 4)) {
        int w = t == 0xdc ? 2 : 4;
        n = rd_be(d.p, w);
        d.p += w;
      } else return corrupt("extension payload");
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
      PyObject* a = dec_payload_array(p, len, depth, dt ? 9 : 6);
      if (!a) return nullptr;
      long f[8];
      const int ni = dt ? 8 : 5;
      for (int i = 0; i < ni; ++i)
        if (!as_int(a, i, &f[i])) {
          Py_DECREF(a);
          return PyErr_Occurred() ? nullptr : corrupt("datetime field");
        }
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
      PyObject* a = dec_payload_array(p, len, depth, 3);
      if (!a) return nullptr;
      long f[3];
      for (int i = 0; i < 3; ++i)
        if (!as_int(a, i, &f[i])) {
          Py_DECREF(a);
          return PyErr_Occurred() ? nullptr : corrupt("date field");
        }
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
      PyObject* bs = PyBytes_FromStringAndSize(reinterpret_cast<const char*>(p), 16);
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
      PyObject* bs = PyBytes_FromStringAndSize(reinterpret_cast<const char*>(p), Py_ssize_t(len));
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

PyObject* unpack_buf(const uint8_t* p, size_t len) {
  Dec d{p, p + len};
  PyObject* v = dec(d, 0);
  if (v && d.p != d.end) {
    Py_DECREF(v);
    return corrupt("extra bytes after the value");
  }
  return v;
}

// ---------------------------------------------------------------------------
// Reading: a process-wide buffer for hits, with a heap fallback when a decode
// re-enters (a pickled object's __setstate__ may itself read the cache).

unsigned char* g_buf = nullptr;
size_t g_cap = 0;
bool g_buf_busy = false;

struct Hit {
  unsigned char* p = nullptr;
  size_t len = 0;
  uint8_t flags = 0;
  bool global = false;
  ~Hit() {
    if (global) g_buf_busy = false;
    else PyMem_Free(p);
  }
};

// Returns the reader status; on a hit `h` holds the value bytes.
ReadStatus read_value(Reader* r, const char* key, size_t klen, Hit* h) {
  if (!r || !r->is_open()) return ReadStatus::unavailable;
  size_t cap;
  if (!g_buf_busy) {
    if (!g_buf) {
      g_cap = 64 * 1024;
      g_buf = static_cast<unsigned char*>(PyMem_Malloc(g_cap));
      if (!g_buf) {
        g_cap = 0;
        return ReadStatus::busy;
      }
    }
    g_buf_busy = true;
    h->global = true;
    h->p = g_buf;
    cap = g_cap;
  } else {
    cap = 4096;
    h->p = static_cast<unsigned char*>(PyMem_Malloc(cap));
    if (!h->p) return ReadStatus::busy;
  }
  for (int attempt = 0; attempt < 4; ++attempt) {
    ReadResult rr = r->get(key, klen, h->p, cap);
    if (rr.status != ReadStatus::too_small) {
      if (rr.status == ReadStatus::hit) {
        h->len = rr.value_len;
        h->flags = rr.flags;
      }
      return rr.status;
    }
    size_t want = (size_t(rr.value_len) + 4095) & ~size_t(4095);
    auto* q = static_cast<unsigned char*>(PyMem_Realloc(h->p, want));
    if (!q) return ReadStatus::busy;
    h->p = q;
    cap = want;
    if (h->global) {
      g_buf = q;
      g_cap = want;
    }
  }
  return ReadStatus::busy;
}

// ---------------------------------------------------------------------------
// Segment

struct SegmentObject {
  PyObject_HEAD
  Reader* reader;
  PyObject* path;
};

PyObject* Segment_new(PyTypeObject* type, PyObject*, PyObject*) {
  auto* self = reinterpret_cast<SegmentObject*>(type->tp_alloc(type, 0));
  if (!self) return nullptr;
  self->reader = new (std::nothrow) Reader();
  if (!self->reader) {
    Py_DECREF(self);
    return PyErr_NoMemory();
  }
  self->path = Py_NewRef(Py_None);
  return reinterpret_cast<PyObject*>(self);
}

void Segment_dealloc(SegmentObject* self) {
  delete self->reader;
  Py_XDECREF(self->path);
  Py_TYPE(self)->tp_free(reinterpret_cast<PyObject*>(self));
}

PyObject* Segment_open(SegmentObject* self, PyObject* args, PyObject* kwds) {
  static const char* kwlist[] = {"path", "hints", "posix_shm", "use_hints", nullptr};
  PyObject* path;
  PyObject* hints = Py_None;
  int posix_shm = 0, use_hints = 1;
  if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&|Opp", const_cast<char**>(kwlist), PyUnicode_FSConverter, &path,
                                   &hints, &posix_shm, &use_hints))
    return nullptr;
  ReaderOptions opts;
  opts.posix_shm = posix_shm;
  opts.use_hints = use_hints;
  if (hints != Py_None) {
    PyObject* hb;
    if (!PyUnicode_FSConverter(hints, &hb)) {
      Py_DECREF(path);
      return nullptr;
    }
    opts.hints_path = PyBytes_AS_STRING(hb);
    Py_DECREF(hb);
  }
  std::string p = PyBytes_AS_STRING(path);
  std::string why;
  // Open into a fresh Reader, then swap: a failed open keeps the old mapping
  // closed as well (the caller asked for a new one), and no thread can be
  // inside get() meanwhile because we hold the GIL.
  Reader fresh;
  int err = fresh.open(p, &why, opts);
  *self->reader = static_cast<Reader&&>(fresh);
  PyObject* old = self->path;
  self->path = err == 0 ? PyUnicode_DecodeFSDefault(p.c_str()) : Py_NewRef(Py_None);
  Py_XDECREF(old);
  Py_DECREF(path);
  if (err) {
    PyObject* exc = PyObject_CallFunction(PyExc_OSError, "is", err, why.c_str());
    if (exc) {
      PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc)), exc);
      Py_DECREF(exc);
    }
    return nullptr;
  }
  Py_RETURN_NONE;
}

PyObject* Segment_close(SegmentObject* self, PyObject*) {
  self->reader->close();
  Py_SETREF(self->path, Py_NewRef(Py_None));
  Py_RETURN_NONE;
}

// get(key: bytes) -> (status, value | None, flags, expiry_ms)
PyObject* Segment_get(SegmentObject* self, PyObject* key) {
  Py_buffer kb;
  if (PyObject_GetBuffer(key, &kb, PyBUF_SIMPLE) < 0) return nullptr;
  Hit h;
  ReadStatus s = read_value(self->reader, static_cast<const char*>(kb.buf), size_t(kb.len), &h);
  PyBuffer_Release(&kb);
  if (s == ReadStatus::hit) {
    PyObject* v = PyBytes_FromStringAndSize(reinterpret_cast<const char*>(h.p), Py_ssize_t(h.len));
    if (!v) return nullptr;
    return Py_BuildValue("iNi", int(s), v, int(h.flags));
  }
  return Py_BuildValue("iOi", int(s), Py_None, 0);
}

PyObject* Segment_alive(SegmentObject* self, PyObject*) {
  return PyBool_FromLong(self->reader->alive(nearcache::shm::monotonic_ms()));
}

PyObject* Segment_totals(PyObject*, PyObject*) {
  auto t = Reader::totals();
  return Py_BuildValue("{sKsKsK}", "hits", (unsigned long long)t.hits, "misses", (unsigned long long)t.misses,
                       "busy", (unsigned long long)t.busy);
}

PyObject* Segment_get_generation(SegmentObject* self, void*) {
  if (!self->reader->is_open()) Py_RETURN_NONE;
  return PyLong_FromUnsignedLongLong(self->reader->generation());
}
PyObject* Segment_get_is_open(SegmentObject* self, void*) { return PyBool_FromLong(self->reader->is_open()); }
PyObject* Segment_get_path(SegmentObject* self, void*) { return Py_NewRef(self->path); }
PyObject* Segment_get_key_limit(SegmentObject* self, void*) { return PyLong_FromUnsignedLong(self->reader->key_limit()); }
PyObject* Segment_get_value_limit(SegmentObject* self, void*) {
  return PyLong_FromUnsignedLong(self->reader->value_limit());
}
PyObject* Segment_get_has_hints(SegmentObject* self, void*) { return PyBool_FromLong(self->reader->has_hints()); }

PyMethodDef Segment_methods[] = {
    {"open", (PyCFunction)(void (*)(void))Segment_open, METH_VARARGS | METH_KEYWORDS,
     "open(path, hints=None, posix_shm=False, use_hints=True): map a segment read-only (replacing any "
     "current mapping); raises OSError with the reader's errno (EPROTONOSUPPORT: unknown layout)."},
    {"close", (PyCFunction)Segment_close, METH_NOARGS, "Unmap the segment."},
    {"get", (PyCFunction)Segment_get, METH_O, "get(key) -> (status, value or None, flags)"},
    {"alive", (PyCFunction)Segment_alive, METH_NOARGS, "The writer is running and its heartbeat is fresh."},
    {"totals", (PyCFunction)Segment_totals, METH_NOARGS | METH_STATIC, "This process's reader counts."},
    {nullptr, nullptr, 0, nullptr}};

PyGetSetDef Segment_getset[] = {
    {"generation", (getter)Segment_get_generation, nullptr, "generation of the mapped table, or None", nullptr},
    {"is_open", (getter)Segment_get_is_open, nullptr, nullptr, nullptr},
    {"path", (getter)Segment_get_path, nullptr, nullptr, nullptr},
    {"key_limit", (getter)Segment_get_key_limit, nullptr, nullptr, nullptr},
    {"value_limit", (getter)Segment_get_value_limit, nullptr, nullptr, nullptr},
    {"has_hints", (getter)Segment_get_has_hints, nullptr, nullptr, nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr}};

PyTypeObject SegmentType = {PyVarObject_HEAD_INIT(nullptr, 0)};

// ---------------------------------------------------------------------------
// CacheCore

struct CacheCore {
  PyObject_HEAD
  SegmentObject* seg;        // may be null: socket only
  PyObject* key_prefix;      // Django's attributes, mirrored here
  PyObject* version;
  PyObject* key_func;
  PyObject* default_key_func;  // django's default_key_func, set by _nc_configure
  PyObject* fallback;        // value -> pickle bytes, or None (PICKLE off)
  PyObject* loads;           // SERIALIZER loads for FLAG_SERIALIZED values, or None
  bool allow_native;         // the subclass keeps Django's make_key/validate_key
  bool native;               // keys are built here
  std::string* head;         // "prefix:version:" (UTF-8)
  Py_ssize_t head_chars;     // its length in characters
  bool head_bad;             // it contains a character memcached refuses
};

void core_recompute(CacheCore* self) {
  self->native = false;
  if (!self->allow_native || !self->default_key_func || self->key_func != self->default_key_func) return;
  if (!self->key_prefix || !PyUnicode_CheckExact(self->key_prefix)) return;
  if (!self->version || !PyLong_CheckExact(self->version)) return;
  int overflow = 0;
  long long v = PyLong_AsLongLongAndOverflow(self->version, &overflow);
  if (overflow || (v == -1 && PyErr_Occurred())) {
    PyErr_Clear();
    return;
  }
  Py_ssize_t pl;
  const char* p = PyUnicode_AsUTF8AndSize(self->key_prefix, &pl);
  if (!p) {
    PyErr_Clear();
    return;
  }
  char num[32];
  int nl = snprintf(num, sizeof num, "%lld", v);
  std::string& h = *self->head;
  h.assign(p, size_t(pl));
  h.push_back(':');
  h.append(num, size_t(nl));
  h.push_back(':');
  self->head_chars = PyUnicode_GET_LENGTH(self->key_prefix) + nl + 2;
  self->head_bad = false;
  for (unsigned char c : h)
    if (c < 33 || c == 127) self->head_bad = true;
  self->native = true;
}

PyObject* CacheCore_new(PyTypeObject* type, PyObject*, PyObject*) {
  auto* self = reinterpret_cast<CacheCore*>(type->tp_alloc(type, 0));
  if (!self) return nullptr;
  self->head = new (std::nothrow) std::string();
  if (!self->head) {
    Py_DECREF(self);
    return PyErr_NoMemory();
  }
  self->key_prefix = PyUnicode_FromString("");
  self->version = PyLong_FromLong(1);
  self->key_func = Py_NewRef(Py_None);
  self->fallback = Py_NewRef(Py_None);
  self->loads = Py_NewRef(Py_None);
  return reinterpret_cast<PyObject*>(self);
}

int CacheCore_traverse(CacheCore* self, visitproc visit, void* arg) {
  Py_VISIT(self->seg);
  Py_VISIT(self->key_prefix);
  Py_VISIT(self->version);
  Py_VISIT(self->key_func);
  Py_VISIT(self->default_key_func);
  Py_VISIT(self->fallback);
  Py_VISIT(self->loads);
  return 0;
}

int CacheCore_clear(CacheCore* self) {
  Py_CLEAR(self->seg);
  Py_CLEAR(self->key_prefix);
  Py_CLEAR(self->version);
  Py_CLEAR(self->key_func);
  Py_CLEAR(self->default_key_func);
  Py_CLEAR(self->fallback);
  Py_CLEAR(self->loads);
  self->native = false;
  return 0;
}

void CacheCore_dealloc(CacheCore* self) {
  PyObject_GC_UnTrack(self);
  CacheCore_clear(self);
  delete self->head;
  Py_TYPE(self)->tp_free(reinterpret_cast<PyObject*>(self));
}

// A key built natively: inline storage for the common short key.
struct KeyBuf {
  char small[256];
  std::string big;
  const char* p = nullptr;
  size_t n = 0;
};

enum class KeyResult { ok, slow, error };

// Django's default make_key + validate_key, for a str key and an int or None version.
KeyResult core_build_key(CacheCore* self, PyObject* key, PyObject* version, KeyBuf* kb) {
  if (!self->native || !PyUnicode_CheckExact(key)) return KeyResult::slow;
  Py_ssize_t kl;
  const char* ks = PyUnicode_AsUTF8AndSize(key, &kl);
  if (!ks) return KeyResult::error;
  const char* head = self->head->data();
  size_t hl = self->head->size();
  Py_ssize_t head_chars = self->head_chars;
  bool head_bad = self->head_bad;
  char vhead[64];
  std::string vh;
  if (version && version != Py_None) {
    if (!PyLong_CheckExact(version)) return KeyResult::slow;
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(version, &overflow);
    if (overflow) return KeyResult::slow;
    if (v == -1 && PyErr_Occurred()) return KeyResult::error;
    Py_ssize_t pl;
    const char* p = PyUnicode_AsUTF8AndSize(self->key_prefix, &pl);
    if (!p) return KeyResult::error;
    int nl = snprintf(vhead, sizeof vhead, ":%lld:", v);
    vh.assign(p, size_t(pl));
    vh.append(vhead, size_t(nl));
    head = vh.data();
    hl = vh.size();
    head_chars = PyUnicode_GET_LENGTH(self->key_prefix) + nl;
    head_bad = false;
    for (size_t i = 0; i < size_t(pl); ++i) {
      unsigned char c = static_cast<unsigned char>(p[i]);
      if (c < 33 || c == 127) head_bad = true;
    }
  }
  const size_t total = hl + size_t(kl);
  char* out;
  if (total <= sizeof kb->small) {
    out = kb->small;
  } else {
    kb->big.resize(total);
    out = kb->big.data();
  }
  std::memcpy(out, head, hl);
  std::memcpy(out + hl, ks, size_t(kl));
  kb->p = out;
  kb->n = total;
  // In UTF-8 every byte below 0x80 is an ASCII character, so scanning bytes
  // finds exactly the characters memcached refuses.
  bool bad = head_bad;
  if (!bad) {
    for (Py_ssize_t i = 0; i < kl; ++i) {
      unsigned char c = static_cast<unsigned char>(ks[i]);
      if (c < 33 || c == 127) {
        bad = true;
        break;
      }
    }
  }
  if (bad || size_t(head_chars + PyUnicode_GET_LENGTH(key)) > kDjangoMaxKeyLength) {
    // Rare: let Django's own validate_key word and raise the warnings.
    PyObject* full = PyUnicode_DecodeUTF8(out, Py_ssize_t(total), nullptr);
    if (!full) return KeyResult::error;
    PyObject* r = PyObject_CallMethodOneArg(reinterpret_cast<PyObject*>(self), s_validate_key, full);
    Py_DECREF(full);
    if (!r) return KeyResult::error;
    Py_DECREF(r);
  }
  return KeyResult::ok;
}

PyObject* core_decode(CacheCore* self, const unsigned char* p, size_t len, uint8_t flags) {
  if ((flags & FLAG_SERIALIZED) && self->loads != Py_None) {
    PyObject* bs = PyBytes_FromStringAndSize(reinterpret_cast<const char*>(p), Py_ssize_t(len));
    if (!bs) return nullptr;
    PyObject* r = PyObject_CallOneArg(self->loads, bs);
    Py_DECREF(bs);
    return r;
  }
  return unpack_buf(p, len);
}

// Parses (key, default=None, version=None)-style fastcall arguments.
bool parse_args(const char* fname, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames,
                const char* const* names, int nmin, int nmax, PyObject** out) {
  for (int i = 0; i < nmax; ++i) out[i] = nullptr;
  if (nargs > nmax) {
    PyErr_Format(PyExc_TypeError, "%s() takes at most %d arguments (%zd given)", fname, nmax, nargs);
    return false;
  }
  for (Py_ssize_t i = 0; i < nargs; ++i) out[i] = args[i];
  if (kwnames) {
    Py_ssize_t nk = PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t j = 0; j < nk; ++j) {
      PyObject* kw = PyTuple_GET_ITEM(kwnames, j);
      int found = -1;
      for (int i = 0; i < nmax; ++i)
        if (PyUnicode_CompareWithASCIIString(kw, names[i]) == 0) found = i;
      if (found < 0) {
        PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'", fname, kw);
        return false;
      }
      if (out[found]) {
        PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'", fname, names[found]);
        return false;
      }
      out[found] = args[nargs + j];
    }
  }
  for (int i = 0; i < nmin; ++i)
    if (!out[i]) {
      PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'", fname, names[i]);
      return false;
    }
  return true;
}

// get(key, default=None, version=None)
PyObject* CacheCore_get(CacheCore* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  static const char* const names[] = {"key", "default", "version"};
  PyObject* a[3];
  if (!parse_args("get", args, nargs, kwnames, names, 1, 3, a)) return nullptr;
  PyObject* key = a[0];
  PyObject* dflt = a[1] ? a[1] : Py_None;
  PyObject* version = a[2] ? a[2] : Py_None;
  KeyBuf kb;
  KeyResult kr = core_build_key(self, key, version, &kb);
  if (kr == KeyResult::error) return nullptr;
  if (kr == KeyResult::slow)
    return PyObject_CallMethodObjArgs(reinterpret_cast<PyObject*>(self), s_get_slow, key, dflt, version, nullptr);
  ReadStatus s;
  {
    Hit h;
    s = read_value(self->seg ? self->seg->reader : nullptr, kb.p, kb.n, &h);
    if (s == ReadStatus::hit) return core_decode(self, h.p, h.len, h.flags);
  }
  PyObject* kbytes = PyBytes_FromStringAndSize(kb.p, Py_ssize_t(kb.n));
  if (!kbytes) return nullptr;
  PyObject* st = PyLong_FromLong(int(s));
  PyObject* r = st ? PyObject_CallMethodObjArgs(reinterpret_cast<PyObject*>(self), s_get_miss, kbytes, dflt, st,
                                                nullptr)
                   : nullptr;
  Py_XDECREF(st);
  Py_DECREF(kbytes);
  return r;
}

// get_many(keys, version=None): hits here, the rest by _nc_get_many_miss(pending, result, version).
PyObject* CacheCore_get_many(CacheCore* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  static const char* const names[] = {"keys", "version"};
  PyObject* a[2];
  if (!parse_args("get_many", args, nargs, kwnames, names, 1, 2, a)) return nullptr;
  PyObject* keys = a[0];
  PyObject* version = a[1] ? a[1] : Py_None;
  if (!self->native)
    return PyObject_CallMethodObjArgs(reinterpret_cast<PyObject*>(self), s_get_many_slow, keys, version, nullptr);
  PyObject* seq = PySequence_Fast(keys, "get_many() expects an iterable of keys");
  if (!seq) return nullptr;
  PyObject* result = PyDict_New();
  PyObject* pending = PyList_New(0);
  if (!result || !pending) goto fail;
  {
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    Reader* r = self->seg ? self->seg->reader : nullptr;
    for (Py_ssize_t i = 0; i < n; ++i) {
      PyObject* key = PySequence_Fast_GET_ITEM(seq, i);
      KeyBuf kb;
      KeyResult kr = core_build_key(self, key, version, &kb);
      if (kr == KeyResult::error) goto fail;
      if (kr == KeyResult::slow) {
        Py_DECREF(result);
        Py_DECREF(pending);
        PyObject* res = PyObject_CallMethodObjArgs(reinterpret_cast<PyObject*>(self), s_get_many_slow, seq, version,
                                                   nullptr);
        Py_DECREF(seq);
        return res;
      }
      Hit h;
      ReadStatus s = read_value(r, kb.p, kb.n, &h);
      if (s == ReadStatus::hit) {
        PyObject* v = core_decode(self, h.p, h.len, h.flags);
        if (!v) goto fail;
        int e = PyDict_SetItem(result, key, v);
        Py_DECREF(v);
        if (e < 0) goto fail;
      } else {
        PyObject* item = Py_BuildValue("(Oy#i)", key, kb.p, Py_ssize_t(kb.n), int(s));
        if (!item) goto fail;
        int e = PyList_Append(pending, item);
        Py_DECREF(item);
        if (e < 0) goto fail;
      }
    }
  }
  Py_DECREF(seq);
  if (PyList_GET_SIZE(pending) > 0) {
    PyObject* r = PyObject_CallMethodObjArgs(reinterpret_cast<PyObject*>(self), s_get_many_miss, pending, result,
                                             nullptr);
    Py_DECREF(pending);
    if (!r) {
      Py_DECREF(result);
      return nullptr;
    }
    Py_DECREF(r);
    return result;
  }
  Py_DECREF(pending);
  return result;
fail:
  Py_DECREF(seq);
  Py_XDECREF(result);
  Py_XDECREF(pending);
  return nullptr;
}

// _nc_key(key, version=None) -> bytes, or None when the Python key path must be used.
PyObject* CacheCore_key(CacheCore* self, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs < 1 || nargs > 2) {
    PyErr_SetString(PyExc_TypeError, "_nc_key(key, version=None)");
    return nullptr;
  }
  KeyBuf kb;
  KeyResult kr = core_build_key(self, args[0], nargs > 1 ? args[1] : Py_None, &kb);
  if (kr == KeyResult::error) return nullptr;
  if (kr == KeyResult::slow) Py_RETURN_NONE;
  return PyBytes_FromStringAndSize(kb.p, Py_ssize_t(kb.n));
}

// _nc_probe(kbytes) -> (status, value or None): the shared-memory lookup alone.
PyObject* CacheCore_probe(CacheCore* self, PyObject* key) {
  if (!PyBytes_Check(key)) {
    PyErr_SetString(PyExc_TypeError, "_nc_probe expects bytes");
    return nullptr;
  }
  Hit h;
  ReadStatus s = read_value(self->seg ? self->seg->reader : nullptr, PyBytes_AS_STRING(key),
                            size_t(PyBytes_GET_SIZE(key)), &h);
  if (s == ReadStatus::hit) {
    PyObject* v = core_decode(self, h.p, h.len, h.flags);
    if (!v) return nullptr;
    return Py_BuildValue("(iN)", int(s), v);
  }
  return Py_BuildValue("(iO)", int(s), Py_None);
}

// _nc_decode(data, flags) -> value
PyObject* CacheCore_decode(CacheCore* self, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 2) {
    PyErr_SetString(PyExc_TypeError, "_nc_decode(data, flags)");
    return nullptr;
  }
  Py_buffer b;
  if (PyObject_GetBuffer(args[0], &b, PyBUF_SIMPLE) < 0) return nullptr;
  long flags = PyLong_AsLong(args[1]);
  PyObject* r = nullptr;
  if (!(flags == -1 && PyErr_Occurred()))
    r = core_decode(self, static_cast<const unsigned char*>(b.buf), size_t(b.len), uint8_t(flags));
  PyBuffer_Release(&b);
  return r;
}

// _nc_pack(value) -> bytes: nearcache msgpack with this cache's pickle fallback.
PyObject* CacheCore_pack(CacheCore* self, PyObject* value) { return packb_obj(value, self->fallback); }

// _nc_configure(segment, allow_native, default_key_func, fallback, loads)
PyObject* CacheCore_configure(CacheCore* self, PyObject* args) {
  PyObject *seg, *dkf, *fallback, *loads;
  int allow;
  if (!PyArg_ParseTuple(args, "OpOOO", &seg, &allow, &dkf, &fallback, &loads)) return nullptr;
  if (seg != Py_None && !PyObject_TypeCheck(seg, &SegmentType)) {
    PyErr_SetString(PyExc_TypeError, "segment must be a nearcache._native.Segment or None");
    return nullptr;
  }
  Py_XSETREF(self->seg, seg == Py_None ? nullptr : reinterpret_cast<SegmentObject*>(Py_NewRef(seg)));
  Py_XSETREF(self->default_key_func, Py_NewRef(dkf));
  Py_XSETREF(self->fallback, Py_NewRef(fallback));
  Py_XSETREF(self->loads, Py_NewRef(loads));
  self->allow_native = allow;
  core_recompute(self);
  Py_RETURN_NONE;
}

PyObject* CacheCore_get_native(CacheCore* self, void*) { return PyBool_FromLong(self->native); }

// Django's key attributes as data descriptors, so that changing them at run
// time (tests replace key_func) switches the native key path on or off.
PyObject* CacheCore_getattr_field(CacheCore* self, void* which) {
  PyObject* v = which == (void*)0 ? self->key_prefix : which == (void*)1 ? self->version : self->key_func;
  return Py_NewRef(v ? v : Py_None);
}

int CacheCore_setattr_field(CacheCore* self, PyObject* value, void* which) {
  if (!value) {
    PyErr_SetString(PyExc_AttributeError, "cannot delete this attribute");
    return -1;
  }
  PyObject** slot = which == (void*)0 ? &self->key_prefix : which == (void*)1 ? &self->version : &self->key_func;
  Py_XSETREF(*slot, Py_NewRef(value));
  core_recompute(self);
  return 0;
}

PyMethodDef CacheCore_methods[] = {
    {"get", (PyCFunction)(void (*)(void))CacheCore_get, METH_FASTCALL | METH_KEYWORDS,
     "get(key, default=None, version=None): Django's BaseCache.get; hits served from shared memory."},
    {"get_many", (PyCFunction)(void (*)(void))CacheCore_get_many, METH_FASTCALL | METH_KEYWORDS,
     "get_many(keys, version=None): Django's BaseCache.get_many."},
    {"_nc_key", (PyCFunction)(void (*)(void))CacheCore_key, METH_FASTCALL,
     "Django's make_key + validate_key, natively; None when the Python path applies."},
    {"_nc_probe", (PyCFunction)CacheCore_probe, METH_O, "Shared-memory lookup of a built key."},
    {"_nc_decode", (PyCFunction)(void (*)(void))CacheCore_decode, METH_FASTCALL, "Decode a stored value."},
    {"_nc_pack", (PyCFunction)CacheCore_pack, METH_O, "Encode a value as nearcache msgpack."},
    {"_nc_configure", (PyCFunction)CacheCore_configure, METH_VARARGS, nullptr},
    {nullptr, nullptr, 0, nullptr}};

PyGetSetDef CacheCore_getset[] = {
    {"key_prefix", (getter)CacheCore_getattr_field, (setter)CacheCore_setattr_field, nullptr, (void*)0},
    {"version", (getter)CacheCore_getattr_field, (setter)CacheCore_setattr_field, nullptr, (void*)1},
    {"key_func", (getter)CacheCore_getattr_field, (setter)CacheCore_setattr_field, nullptr, (void*)2},
    {"_nc_native_keys", (getter)CacheCore_get_native, nullptr, "keys are built natively", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr}};

PyTypeObject CacheCoreType = {PyVarObject_HEAD_INIT(nullptr, 0)};

// ---------------------------------------------------------------------------
// Module functions

PyObject* mod_packb(PyObject*, PyObject* args, PyObject* kwds) {
  static const char* kwlist[] = {"value", "fallback", nullptr};
  PyObject *v, *fb = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|O", const_cast<char**>(kwlist), &v, &fb)) return nullptr;
  return packb_obj(v, fb);
}

PyObject* mod_unpackb(PyObject*, PyObject* data) {
  Py_buffer b;
  if (PyObject_GetBuffer(data, &b, PyBUF_SIMPLE) < 0) return nullptr;
  PyObject* r = unpack_buf(static_cast<const uint8_t*>(b.buf), size_t(b.len));
  PyBuffer_Release(&b);
  return r;
}

PyMethodDef module_methods[] = {
    {"packb", (PyCFunction)(void (*)(void))mod_packb, METH_VARARGS | METH_KEYWORDS,
     "packb(value, fallback=None) -> bytes: nearcache msgpack. fallback(obj) -> bytes pickles what has no "
     "extension type; without it such values raise TypeError."},
    {"unpackb", (PyCFunction)mod_unpackb, METH_O, "unpackb(data) -> value"},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "nearcache._native",
                         "Native parts of nearcache: shared-memory reader, value codec, Django hit path.", -1,
                         module_methods};

PyObject* import_attr(const char* mod, const char* attr) {
  PyObject* m = PyImport_ImportModule(mod);
  if (!m) return nullptr;
  PyObject* a = PyObject_GetAttrString(m, attr);
  Py_DECREF(m);
  return a;
}

}  // namespace

PyMODINIT_FUNC PyInit__native(void) {
  PyDateTime_IMPORT;
  if (!PyDateTimeAPI) return nullptr;

  SegmentType.tp_name = "nearcache._native.Segment";
  SegmentType.tp_basicsize = sizeof(SegmentObject);
  SegmentType.tp_flags = Py_TPFLAGS_DEFAULT;
  SegmentType.tp_doc = "A read-only mapping of a nearcache shared-memory segment.";
  SegmentType.tp_new = Segment_new;
  SegmentType.tp_dealloc = (destructor)Segment_dealloc;
  SegmentType.tp_methods = Segment_methods;
  SegmentType.tp_getset = Segment_getset;
  if (PyType_Ready(&SegmentType) < 0) return nullptr;

  CacheCoreType.tp_name = "nearcache._native.CacheCore";
  CacheCoreType.tp_basicsize = sizeof(CacheCore);
  CacheCoreType.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC;
  CacheCoreType.tp_doc = "Native base of nearcache.django.NearCache: the hit path.";
  CacheCoreType.tp_new = CacheCore_new;
  CacheCoreType.tp_dealloc = (destructor)CacheCore_dealloc;
  CacheCoreType.tp_traverse = (traverseproc)CacheCore_traverse;
  CacheCoreType.tp_clear = (inquiry)CacheCore_clear;
  CacheCoreType.tp_methods = CacheCore_methods;
  CacheCoreType.tp_getset = CacheCore_getset;
  if (PyType_Ready(&CacheCoreType) < 0) return nullptr;

  g_pickle_loads = import_attr("pickle", "loads");
  g_decimal_type = import_attr("decimal", "Decimal");
  g_uuid_type = import_attr("uuid", "UUID");
  if (!g_pickle_loads || !g_decimal_type || !g_uuid_type) return nullptr;
  g_timezone_type = Py_NewRef(reinterpret_cast<PyObject*>(Py_TYPE(PyDateTime_TimeZone_UTC)));
  s_bytes = PyUnicode_InternFromString("bytes");
  s_int = PyUnicode_InternFromString("int");
  s_key = PyUnicode_InternFromString("key");
  s_getinitargs = PyUnicode_InternFromString("__getinitargs__");
  s_validate_key = PyUnicode_InternFromString("validate_key");
  s_get_miss = PyUnicode_InternFromString("_nc_get_miss");
  s_get_slow = PyUnicode_InternFromString("_nc_get_slow");
  s_get_many_miss = PyUnicode_InternFromString("_nc_get_many_miss");
  s_get_many_slow = PyUnicode_InternFromString("_nc_get_many_slow");

  PyObject* m = PyModule_Create(&moduledef);
  if (!m) return nullptr;
  Py_INCREF(&SegmentType);
  Py_INCREF(&CacheCoreType);
  if (PyModule_AddObject(m, "Segment", reinterpret_cast<PyObject*>(&SegmentType)) < 0 ||
      PyModule_AddObject(m, "CacheCore", reinterpret_cast<PyObject*>(&CacheCoreType)) < 0)
    return nullptr;
  PyModule_AddIntConstant(m, "HIT", int(ReadStatus::hit));
  PyModule_AddIntConstant(m, "MISS", int(ReadStatus::miss));
  PyModule_AddIntConstant(m, "BUSY", int(ReadStatus::busy));
  PyModule_AddIntConstant(m, "UNAVAILABLE", int(ReadStatus::unavailable));
  PyModule_AddIntConstant(m, "FLAG_SERIALIZED", FLAG_SERIALIZED);
  PyModule_AddIntConstant(m, "LAYOUT_VERSION", int(nearcache::shm::kLayoutVersion));
  PyObject* codes = Py_BuildValue("{sisisisisisisisisisisi}", "tuple", EXT_TUPLE, "set", EXT_SET, "frozenset",
                                  EXT_FROZENSET, "datetime", EXT_DATETIME, "date", EXT_DATE, "time", EXT_TIME,
                                  "timedelta", EXT_TIMEDELTA, "decimal", EXT_DECIMAL, "uuid", EXT_UUID, "bigint",
                                  EXT_BIGINT, "pickle", EXT_PICKLE);
  if (!codes || PyModule_AddObject(m, "EXT_CODES", codes) < 0) return nullptr;
  return m;
}
