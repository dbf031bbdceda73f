// client-py/native/module.cc — the nearcache._native module: it fills in the
// shared state (state.h), defines packb/unpackb, registers Segment and
// CacheCore, and adds the constants the Python side reads (statuses, flag,
// layout version, EXT_CODES).
//
// The parts: encoder (packb), decoder (unpackb), segment (the reader
// binding), django_hit (NearCache's one-call hit path). Written against the
// CPython C API: it measured fastest on the hit path (client-py/README.md).
#include "state.h"

#include <datetime.h>

#include "compression.h"
#include "decoder.h"
#include "django_hit.h"
#include "encoder.h"
#include "segment.h"

namespace nearcache::py {

namespace {

PyObject* g_zoneinfo_type = nullptr;

PyObject* import_attr(const char* mod, const char* attr) {
  PyObject* m = PyImport_ImportModule(mod);
  if (!m) return nullptr;
  PyObject* a = PyObject_GetAttrString(m, attr);
  Py_DECREF(m);
  return a;
}

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

// compress(codec, data, level=0) -> frame bytes (compression.h)
PyObject* mod_compress(PyObject*, PyObject* args) {
  int codec, level = 0;
  Py_buffer b;
  if (!PyArg_ParseTuple(args, "iy*|i", &codec, &b, &level)) return nullptr;
  PyObject* r = compress_frame(codec, static_cast<const uint8_t*>(b.buf), size_t(b.len), level);
  PyBuffer_Release(&b);
  return r;
}

// decompress(codec, frame) -> bytes: the native codecs only.
PyObject* mod_decompress(PyObject*, PyObject* args) {
  int codec;
  Py_buffer b;
  if (!PyArg_ParseTuple(args, "iy*", &codec, &b)) return nullptr;
  PyObject* r = decompress_frame(codec, static_cast<const uint8_t*>(b.buf), size_t(b.len));
  PyBuffer_Release(&b);
  return r;
}

PyMethodDef module_methods[] = {
    {"compress", (PyCFunction)mod_compress, METH_VARARGS,
     "compress(codec, data, level=0) -> bytes: a compressed-value frame (zlib, zstd, lz4)."},
    {"decompress", (PyCFunction)mod_decompress, METH_VARARGS,
     "decompress(codec, frame) -> bytes: the payload of a compressed-value frame (zlib, zstd, lz4)."},
    {"packb", (PyCFunction)(void (*)(void))mod_packb, METH_VARARGS | METH_KEYWORDS,
     "packb(value, fallback=None) -> bytes: nearcache msgpack. fallback(obj) -> bytes pickles what has no "
     "extension type; without it such values raise TypeError."},
    {"unpackb", (PyCFunction)mod_unpackb, METH_O, "unpackb(data) -> value"},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "nearcache._native",
                         "Native parts of nearcache: shared-memory reader, value codec, Django hit path.", -1,
                         module_methods};

// The interned names the other parts use.
struct Interned {
  PyObject** slot;
  const char* text;
};
constexpr Interned kInterned[] = {
    {&s_bytes, "bytes"},
    {&s_key, "key"},
    {&s_getinitargs, "__getinitargs__"},
    {&s_validate_key, "validate_key"},
    {&s_get_miss, "_nc_get_miss"},
    {&s_get_slow, "_nc_get_slow"},
    {&s_get_many_miss, "_nc_get_many_miss"},
    {&s_get_many_slow, "_nc_get_many_slow"},
    {&s_get_pending, "_nc_get_pending"},
    {&s_reap, "_nc_reap"},
};

// {name: code} of the extension types.
PyObject* ext_codes() {
  PyObject* d = PyDict_New();
  for (const ExtName& e : kExtNames) {
    PyObject* code = d ? PyLong_FromLong(e.code) : nullptr;
    if (!code || PyDict_SetItemString(d, e.name, code) < 0) {
      Py_XDECREF(code);
      Py_XDECREF(d);
      return nullptr;
    }
    Py_DECREF(code);
  }
  return d;
}

PyObject* init_module() {
  PyDateTime_IMPORT;
  if (!PyDateTimeAPI || encoder_ready() < 0 || decoder_ready() < 0) return nullptr;
  if (segment_type_ready() < 0 || cache_core_type_ready() < 0) return nullptr;

  g_pickle_loads = import_attr("pickle", "loads");
  g_decimal_type = import_attr("decimal", "Decimal");
  g_uuid_type = import_attr("uuid", "UUID");
  if (!g_pickle_loads || !g_decimal_type || !g_uuid_type) return nullptr;
  g_timezone_type = Py_NewRef(reinterpret_cast<PyObject*>(Py_TYPE(PyDateTime_TimeZone_UTC)));
  for (const Interned& n : kInterned) *n.slot = PyUnicode_InternFromString(n.text);

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
  PyModule_AddIntConstant(m, "NEGATIVE", int(ReadStatus::negative));
  PyModule_AddIntConstant(m, "SUSPENDED", int(ReadStatus::suspended));
  PyModule_AddIntConstant(m, "ABSENT", kAbsent);
  PyModule_AddIntConstant(m, "FLAG_SERIALIZED", FLAG_SERIALIZED);
  PyModule_AddIntConstant(m, "CODEC_MASK", kCodecMask);
  PyModule_AddIntConstant(m, "CODEC_SHIFT", kCodecShift);
  PyModule_AddIntConstant(m, "FRAME_HEADER", int(kFrameHeader));
  PyModule_AddIntConstant(m, "LAYOUT_VERSION", int(nearcache::shm::kLayoutVersion));
  PyObject* codes = ext_codes();
  if (!codes || PyModule_AddObject(m, "EXT_CODES", codes) < 0) return nullptr;
  return m;
}

}  // namespace

PyObject* zoneinfo_type() {
  if (!g_zoneinfo_type) g_zoneinfo_type = import_attr("zoneinfo", "ZoneInfo");
  return g_zoneinfo_type;
}

}  // namespace nearcache::py

PyMODINIT_FUNC PyInit__native(void) { return nearcache::py::init_module(); }
