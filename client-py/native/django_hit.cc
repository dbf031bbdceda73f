// client-py/native/django_hit.cc — CacheCore (django_hit.h): get and get_many
// served from shared memory, the native make_key + validate_key, and the
// helpers the Python subclass calls (_nc_key, _nc_probe, _nc_decode, _nc_pack,
// _nc_configure). Per hit: the size of this process's unacknowledged writes,
// build the key, read_value (inline, segment.h), unpack_buf (decoder.cc),
// after decompress_frame (compression.cc) for a compressed value.
#include "django_hit.h"

#include <cstdio>
#include <cstring>
#include <new>
#include <string>

#include "compression.h"
#include "decoder.h"
#include "encoder.h"
#include "segment.h"

namespace nearcache::py {

PyTypeObject CacheCoreType = {PyVarObject_HEAD_INIT(nullptr, 0)};

namespace {

constexpr size_t kDjangoMaxKeyLength = 250;  // django.core.cache.backends.base.MEMCACHE_MAX_KEY_LENGTH

// "prefix:version:" as make_key writes it (UTF-8), its length in
// characters, and whether it holds a character memcached refuses.
struct KeyHead {
  std::string s;
  Py_ssize_t chars = 0;
  bool bad = false;
};

struct CacheCore {
  PyObject_HEAD
  SegmentObject* seg;        // may be null: socket only
  PyObject* key_prefix;      // Django's attributes, mirrored here
  PyObject* version;
  PyObject* key_func;
  PyObject* default_key_func;  // django's default_key_func, set by _nc_configure
  PyObject* fallback;        // value -> pickle bytes, or None (PICKLE off)
  PyObject* loads;           // SERIALIZER loads for FLAG_SERIALIZED values, or None
  PyObject* decompress;      // (codec, frame) -> bytes for the codecs not done natively, or None
  PyObject* writes;          // the Client's unacknowledged writes (a dict; nearcache.writes), or null
  bool allow_native;         // the subclass keeps Django's make_key/validate_key
  bool local_misses;         // LOCAL_MISSES: a definite miss (segment.h) is answered here
  bool native;               // keys are built here
  KeyHead* head;             // for key_prefix and version, valid while native
};

// The characters memcached refuses in a key (validate_key warns about them).
// In UTF-8 every byte below 0x80 is an ASCII character, so scanning bytes
// finds exactly those characters.
inline bool has_refused_char(const char* s, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 33 || c == 127) return true;
  }
  return false;
}

// Builds the head for a str prefix and version v; false with an exception set.
bool make_head(PyObject* prefix, long long v, KeyHead* h) {
  Py_ssize_t pl;
  const char* p = PyUnicode_AsUTF8AndSize(prefix, &pl);
  if (!p) return false;
  char num[32];
  int nl = snprintf(num, sizeof num, ":%lld:", v);
  h->s.assign(p, size_t(pl));
  h->s.append(num, size_t(nl));
  h->chars = PyUnicode_GET_LENGTH(prefix) + nl;
  h->bad = has_refused_char(p, size_t(pl));
  return true;
}

void core_recompute(CacheCore* self) {
  self->native = false;
  if (!self->allow_native || !self->default_key_func || self->key_func != self->default_key_func) return;
  if (!self->key_prefix || !PyUnicode_CheckExact(self->key_prefix)) return;
  if (!self->version || !PyLong_CheckExact(self->version)) return;
  int overflow = 0;
  long long v = PyLong_AsLongLongAndOverflow(self->version, &overflow);
  if (overflow || (v == -1 && PyErr_Occurred()) || !make_head(self->key_prefix, v, self->head)) {
    PyErr_Clear();
    return;
  }
  self->native = true;
}

PyObject* CacheCore_new(PyTypeObject* type, PyObject*, PyObject*) {
  auto* self = reinterpret_cast<CacheCore*>(type->tp_alloc(type, 0));
  if (!self) return nullptr;
  self->head = new (std::nothrow) KeyHead();
  if (!self->head) {
    Py_DECREF(self);
    return PyErr_NoMemory();
  }
  self->key_prefix = PyUnicode_FromString("");
  self->version = PyLong_FromLong(1);
  self->key_func = Py_NewRef(Py_None);
  self->fallback = Py_NewRef(Py_None);
  self->loads = Py_NewRef(Py_None);
  self->decompress = Py_NewRef(Py_None);
  return reinterpret_cast<PyObject*>(self);
}

// The object references of a CacheCore, once for traverse and clear.
#define CACHE_CORE_REFS(X) X(seg) X(key_prefix) X(version) X(key_func) X(default_key_func) X(fallback) X(loads) X(decompress) X(writes)

int CacheCore_traverse(CacheCore* self, visitproc visit, void* arg) {
#define VISIT_REF(f) Py_VISIT(self->f);
  CACHE_CORE_REFS(VISIT_REF)
#undef VISIT_REF
  return 0;
}

int CacheCore_clear(CacheCore* self) {
#define CLEAR_REF(f) Py_CLEAR(self->f);
  CACHE_CORE_REFS(CLEAR_REF)
#undef CLEAR_REF
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
  const KeyHead* head = self->head;
  KeyHead vh;
  if (version && version != Py_None) {
    if (!PyLong_CheckExact(version)) return KeyResult::slow;
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(version, &overflow);
    if (overflow) return KeyResult::slow;
    if (v == -1 && PyErr_Occurred()) return KeyResult::error;
    if (!make_head(self->key_prefix, v, &vh)) return KeyResult::error;
    head = &vh;
  }
  const size_t hl = head->s.size(), total = hl + size_t(kl);
  char* out;
  if (total <= sizeof kb->small) {
    out = kb->small;
  } else {
    kb->big.resize(total);
    out = kb->big.data();
  }
  std::memcpy(out, head->s.data(), hl);
  std::memcpy(out + hl, ks, size_t(kl));
  kb->p = out;
  kb->n = total;
  if (head->bad || has_refused_char(ks, size_t(kl)) ||
      size_t(head->chars + PyUnicode_GET_LENGTH(key)) > kDjangoMaxKeyLength) {
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

PyObject* core_decode_plain(CacheCore* self, const unsigned char* p, size_t len, uint8_t flags) {
  if ((flags & FLAG_SERIALIZED) && self->loads != Py_None) {
    PyObject* bs = PyBytes_FromStringAndSize(reinterpret_cast<const char*>(p), Py_ssize_t(len));
    if (!bs) return nullptr;
    PyObject* r = PyObject_CallOneArg(self->loads, bs);
    Py_DECREF(bs);
    return r;
  }
  return unpack_buf(p, len);
}

// A stored value: decompressed first when its flags name a codec
// (compression.h); zlib, zstd and lz4 here, the others by the Python hook.
PyObject* core_decode(CacheCore* self, const unsigned char* p, size_t len, uint8_t flags) {
  const int codec = codec_of(flags);
  if (codec == CODEC_NONE) return core_decode_plain(self, p, len, flags);
  PyObject* raw;
  if (codec_native(codec)) {
    raw = decompress_frame(codec, p, len);
  } else if (self->decompress != Py_None) {
    raw = PyObject_CallFunction(self->decompress, "iy#", codec, reinterpret_cast<const char*>(p), Py_ssize_t(len));
    if (raw && !PyBytes_Check(raw)) {
      Py_SETREF(raw, nullptr);
      PyErr_SetString(PyExc_ValueError, "nearcache: decompress hook did not return bytes");
    }
  } else {
    PyErr_Format(PyExc_ValueError, "nearcache: value compressed with codec %d, which this reader lacks", codec);
    return nullptr;
  }
  if (!raw) return nullptr;
  PyObject* v = core_decode_plain(self, reinterpret_cast<const unsigned char*>(PyBytes_AS_STRING(raw)),
                                  size_t(PyBytes_GET_SIZE(raw)), flags);
  Py_DECREF(raw);
  return v;
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

// Writes of this process the daemon has not acknowledged come before the
// table: 1 when some are left after NearCache._nc_reap took the replies
// already received, 0 when none (a dict size on the common path), -1 on error.
int core_writes_pending(CacheCore* self) {
  if (!self->writes || PyDict_GET_SIZE(self->writes) == 0) return 0;
  PyObject* r = PyObject_CallMethodNoArgs(reinterpret_cast<PyObject*>(self), s_reap);
  if (!r) return -1;
  const int none_left = PyObject_IsTrue(r);
  Py_DECREF(r);
  return none_left < 0 ? -1 : !none_left;
}

// A failure of the native path (a key for Django's own checks, a value that
// does not decode: a SERIALIZER's loads or a COMPRESSOR may raise anything)
// goes to the Python path, which says which; BaseExceptions propagate.
bool retry_in_python() {
  if (!PyErr_ExceptionMatches(PyExc_Exception)) return false;
  PyErr_Clear();
  return true;
}

PyObject* core_get(CacheCore* self, PyObject* key, PyObject* dflt, PyObject* version) {
  KeyBuf kb;
  KeyResult kr = core_build_key(self, key, version, &kb);
  if (kr == KeyResult::error) return nullptr;
  if (kr == KeyResult::slow)
    return PyObject_CallMethodObjArgs(reinterpret_cast<PyObject*>(self), s_get_slow, key, dflt, version, nullptr);
  int code;
  {
    Hit h;
    Reader* r = segment_reader(self->seg);
    const ReadStatus s = read_value(r, kb.p, kb.n, &h);
    if (s == ReadStatus::hit) return core_decode(self, h.p, h.len, h.flags);
    code = lookup_code(r, s, kb.n);
    // With writes of this process pending, get never comes here (core_writes_pending).
    if (self->local_misses && definite_miss(code)) {
      r->note_local_miss();
      return Py_NewRef(dflt);
    }
  }
  PyObject* kbytes = PyBytes_FromStringAndSize(kb.p, Py_ssize_t(kb.n));
  if (!kbytes) return nullptr;
  PyObject* st = PyLong_FromLong(code);
  PyObject* r = st ? PyObject_CallMethodObjArgs(reinterpret_cast<PyObject*>(self), s_get_miss, kbytes, dflt, st,
                                                nullptr)
                   : nullptr;
  Py_XDECREF(st);
  Py_DECREF(kbytes);
  return r;
}

// get(key, default=None, version=None)
PyObject* CacheCore_get(CacheCore* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  static const char* const names[] = {"key", "default", "version"};
  PyObject* a[3];
  if (!parse_args("get", args, nargs, kwnames, names, 1, 3, a)) return nullptr;
  PyObject* key = a[0];
  PyObject* dflt = a[1] ? a[1] : Py_None;
  PyObject* version = a[2] ? a[2] : Py_None;
  PyObject* self_obj = reinterpret_cast<PyObject*>(self);
  const int pending = core_writes_pending(self);
  if (pending < 0) return nullptr;
  if (pending) return PyObject_CallMethodObjArgs(self_obj, s_get_pending, key, dflt, version, nullptr);
  PyObject* r = core_get(self, key, dflt, version);
  if (!r && retry_in_python()) return PyObject_CallMethodObjArgs(self_obj, s_get_slow, key, dflt, version, nullptr);
  return r;
}

// Hits here, the rest by _nc_get_many_miss(pending, result).
PyObject* core_get_many(CacheCore* self, PyObject* keys, PyObject* version) {
  if (!self->native)
    return PyObject_CallMethodObjArgs(reinterpret_cast<PyObject*>(self), s_get_many_slow, keys, version, nullptr);
  PyObject* seq = PySequence_Fast(keys, "get_many() expects an iterable of keys");
  if (!seq) return nullptr;
  PyObject* result = PyDict_New();
  PyObject* pending = PyList_New(0);
  if (!result || !pending) goto fail;
  {
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    Reader* r = segment_reader(self->seg);
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
        const int code = lookup_code(r, s, kb.n);
        if (self->local_misses && definite_miss(code)) {  // a miss, for sure
          r->note_local_miss();
          continue;
        }
        PyObject* item = Py_BuildValue("(Oy#i)", key, kb.p, Py_ssize_t(kb.n), code);
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

// get_many(keys, version=None); with writes pending, or when the native path
// fails, the Python path (_nc_get_many_slow) answers.
PyObject* CacheCore_get_many(CacheCore* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  static const char* const names[] = {"keys", "version"};
  PyObject* a[2];
  if (!parse_args("get_many", args, nargs, kwnames, names, 1, 2, a)) return nullptr;
  PyObject* keys = a[0];
  PyObject* version = a[1] ? a[1] : Py_None;
  PyObject* self_obj = reinterpret_cast<PyObject*>(self);
  const int pending = core_writes_pending(self);
  if (pending < 0) return nullptr;
  PyObject* r = pending ? nullptr : core_get_many(self, keys, version);
  if (pending || (!r && retry_in_python()))
    return PyObject_CallMethodObjArgs(self_obj, s_get_many_slow, keys, version, nullptr);
  return r;
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
  Reader* r = segment_reader(self->seg);
  const size_t klen = size_t(PyBytes_GET_SIZE(key));
  ReadStatus s = read_value(r, PyBytes_AS_STRING(key), klen, &h);
  if (s == ReadStatus::hit) {
    PyObject* v = core_decode(self, h.p, h.len, h.flags);
    if (!v) return nullptr;
    return Py_BuildValue("(iN)", int(s), v);
  }
  return Py_BuildValue("(iO)", lookup_code(r, s, klen), Py_None);
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

// _nc_configure(segment, allow_native, default_key_func, fallback, loads, local_misses=False, decompress=None,
//               writes=None)
PyObject* CacheCore_configure(CacheCore* self, PyObject* args) {
  PyObject *seg, *dkf, *fallback, *loads, *decompress = Py_None, *writes = Py_None;
  int allow, local_misses = 0;
  if (!PyArg_ParseTuple(args, "OpOOO|pOO", &seg, &allow, &dkf, &fallback, &loads, &local_misses, &decompress,
                        &writes))
    return nullptr;
  if (seg != Py_None && !PyObject_TypeCheck(seg, &SegmentType)) {
    PyErr_SetString(PyExc_TypeError, "segment must be a nearcache._native.Segment or None");
    return nullptr;
  }
  if (writes != Py_None && !PyDict_CheckExact(writes)) {
    PyErr_SetString(PyExc_TypeError, "writes must be a dict or None");
    return nullptr;
  }
  Py_XSETREF(self->writes, writes == Py_None ? nullptr : Py_NewRef(writes));
  Py_XSETREF(self->seg, seg == Py_None ? nullptr : reinterpret_cast<SegmentObject*>(Py_NewRef(seg)));
  Py_XSETREF(self->default_key_func, Py_NewRef(dkf));
  Py_XSETREF(self->fallback, Py_NewRef(fallback));
  Py_XSETREF(self->loads, Py_NewRef(loads));
  Py_XSETREF(self->decompress, Py_NewRef(decompress));
  self->allow_native = allow;
  self->local_misses = local_misses;
  core_recompute(self);
  Py_RETURN_NONE;
}

PyObject* CacheCore_get_native(CacheCore* self, void*) { return PyBool_FromLong(self->native); }

// Django's key attributes as data descriptors, so that changing them at run
// time (tests replace key_func) switches the native key path on or off.
PyObject** field_slot(CacheCore* self, void* which) {
  return which == (void*)0 ? &self->key_prefix : which == (void*)1 ? &self->version : &self->key_func;
}

PyObject* CacheCore_getattr_field(CacheCore* self, void* which) {
  PyObject* v = *field_slot(self, which);
  return Py_NewRef(v ? v : Py_None);
}

int CacheCore_setattr_field(CacheCore* self, PyObject* value, void* which) {
  if (!value) {
    PyErr_SetString(PyExc_AttributeError, "cannot delete this attribute");
    return -1;
  }
  Py_XSETREF(*field_slot(self, which), Py_NewRef(value));
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

}  // namespace

int cache_core_type_ready() {
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
  return PyType_Ready(&CacheCoreType);
}

}  // namespace nearcache::py
