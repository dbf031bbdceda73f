// client-py/native/segment.cc — nearcache._native.Segment: map a segment
// read-only (open/close), look a key up (get), and what the reader reports
// (alive, generation, limits, this process's hit/miss counts).
//
// Everything runs with the GIL held and never releases it, so a Segment is
// never re-mapped while another thread reads it.
#include "segment.h"

#include <unistd.h>

#include <algorithm>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "hits.h"

namespace nearcache::py {

using nearcache::shm::ReaderOptions;

PyTypeObject SegmentType = {PyVarObject_HEAD_INIT(nullptr, 0)};

namespace {

// This process's hit region (doc/protocol.md, HITS): one per process, made
// on first use; a fork() child makes its own (the inherited one is its
// parent's), so the child's hits are never written into the parent's ring.
// Every Segment's Reader records into it: when a child replaces the
// region, its Readers move to the new one first, so that none is left
// pointing at the unmapped parent's (a fork child's lookup after its first
// HITS registration crashed that way).
std::unique_ptr<nearcache::shm::HitRegion> g_region;
pid_t g_region_pid = 0;
std::string g_region_error;
std::vector<Reader*> g_readers;  // GIL held throughout

nearcache::shm::HitRegion* process_region() {
  if (g_region_pid != getpid()) {
    for (Reader* r : g_readers) r->attach_hits(nullptr);
    g_region.reset();  // the parent's: unmapped and closed in this process only
    g_region_pid = getpid();
    g_region_error.clear();
    g_region = nearcache::shm::HitRegion::create(&g_region_error);
    for (Reader* r : g_readers)
      if (r->is_open()) r->attach_hits(g_region.get());
  }
  return g_region.get();
}

PyObject* Segment_new(PyTypeObject* type, PyObject*, PyObject*) {
  auto* self = reinterpret_cast<SegmentObject*>(type->tp_alloc(type, 0));
  if (!self) return nullptr;
  self->reader = new (std::nothrow) Reader();
  if (!self->reader) {
    Py_DECREF(self);
    return PyErr_NoMemory();
  }
  try {
    g_readers.push_back(self->reader);
  } catch (const std::bad_alloc&) {
    delete self->reader;
    self->reader = nullptr;
    Py_DECREF(self);
    return PyErr_NoMemory();
  }
  self->path = Py_NewRef(Py_None);
  return reinterpret_cast<PyObject*>(self);
}

void Segment_dealloc(SegmentObject* self) {
  g_readers.erase(std::remove(g_readers.begin(), g_readers.end(), self->reader), g_readers.end());
  delete self->reader;
  Py_XDECREF(self->path);
  Py_TYPE(self)->tp_free(reinterpret_cast<PyObject*>(self));
}

PyObject* Segment_open(SegmentObject* self, PyObject* args, PyObject* kwds) {
  static const char* kwlist[] = {"path", "posix_shm", nullptr};
  PyObject* path;
  int posix_shm = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&|$p", const_cast<char**>(kwlist), PyUnicode_FSConverter, &path,
                                   &posix_shm))
    return nullptr;
  ReaderOptions opts;
  opts.posix_shm = posix_shm;
  std::string p = PyBytes_AS_STRING(path);
  std::string why;
  // Open into a fresh Reader, then swap: a failed open keeps the old mapping
  // closed as well (the caller asked for a new one), and no thread can be
  // inside get() meanwhile because we hold the GIL.
  Reader fresh;
  int err = fresh.open(p, &why, opts);
  if (err == 0) fresh.attach_hits(process_region());
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
  const size_t klen = size_t(kb.len);
  ReadStatus s = read_value(self->reader, static_cast<const char*>(kb.buf), klen, &h);
  PyBuffer_Release(&kb);
  if (s == ReadStatus::hit) {
    PyObject* v = PyBytes_FromStringAndSize(reinterpret_cast<const char*>(h.p), Py_ssize_t(h.len));
    if (!v) return nullptr;
    return Py_BuildValue("iNi", int(s), v, int(h.flags));
  }
  return Py_BuildValue("iOi", lookup_code(self->reader, s, klen), Py_None, 0);
}

PyObject* Segment_alive(SegmentObject* self, PyObject*) {
  return PyBool_FromLong(self->reader->alive(nearcache::shm::monotonic_ms()));
}

PyObject* Segment_totals(PyObject*, PyObject*) {
  auto t = Reader::totals();
  return Py_BuildValue("{sKsKsKsK}", "hits", (unsigned long long)t.hits, "misses", (unsigned long long)t.misses,
                       "busy", (unsigned long long)t.busy, "local_misses", (unsigned long long)t.local_misses);
}

// local_miss(): the caller answered a definite miss (ABSENT or NEGATIVE from
// get) without asking the daemon; counted in the hit region, so that STATUS
// counts the miss once (misses_total, shm_local_misses_total).
PyObject* Segment_local_miss(SegmentObject* self, PyObject*) {
  self->reader->note_local_miss();
  Py_RETURN_NONE;
}

// hit_region_fd() -> int: this process's hit region, to send with HITS
// (made if needed); OSError when the kernel refuses a sealed memfd.
PyObject* Segment_hit_region_fd(PyObject*, PyObject*) {
  nearcache::shm::HitRegion* r = process_region();
  if (!r) return PyErr_Format(PyExc_OSError, "no hit region: %s", g_region_error.c_str());
  return PyLong_FromLong(r->fd());
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
PyObject* Segment_get_authoritative(SegmentObject* self, void*) {
  return PyBool_FromLong(self->reader->authoritative());
}
PyObject* Segment_get_suspended(SegmentObject* self, void*) { return PyBool_FromLong(self->reader->suspended()); }

PyMethodDef Segment_methods[] = {
    {"open", (PyCFunction)(void (*)(void))Segment_open, METH_VARARGS | METH_KEYWORDS,
     "open(path, *, posix_shm=False): map a segment read-only (replacing any "
     "current mapping); raises OSError with the reader's errno (EPROTONOSUPPORT: unknown layout)."},
    {"close", (PyCFunction)Segment_close, METH_NOARGS, "Unmap the segment."},
    {"get", (PyCFunction)Segment_get, METH_O,
     "get(key) -> (status, value or None, flags); status HIT, ABSENT or NEGATIVE (definite misses), or "
     "another code (ask the daemon)"},
    {"local_miss", (PyCFunction)Segment_local_miss, METH_NOARGS,
     "Count a definite miss of get's that the caller answered without asking the daemon."},
    {"alive", (PyCFunction)Segment_alive, METH_NOARGS, "The writer is running and its heartbeat is fresh."},
    {"totals", (PyCFunction)Segment_totals, METH_NOARGS | METH_STATIC, "This process's reader counts."},
    {"hit_region_fd", (PyCFunction)Segment_hit_region_fd, METH_NOARGS | METH_STATIC,
     "This process's hit region's fd, to register with HITS (one region per process)."},
    {nullptr, nullptr, 0, nullptr}};

PyGetSetDef Segment_getset[] = {
    {"generation", (getter)Segment_get_generation, nullptr, "generation of the mapped table, or None", nullptr},
    {"is_open", (getter)Segment_get_is_open, nullptr, nullptr, nullptr},
    {"path", (getter)Segment_get_path, nullptr, nullptr, nullptr},
    {"key_limit", (getter)Segment_get_key_limit, nullptr, nullptr, nullptr},
    {"value_limit", (getter)Segment_get_value_limit, nullptr, nullptr, nullptr},
    {"authoritative", (getter)Segment_get_authoritative, nullptr,
     "the header says a miss in this table is definite (no Redis tier)", nullptr},
    {"suspended", (getter)Segment_get_suspended, nullptr, "the daemon asks readers to serve nothing now", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr}};

}  // namespace

int segment_type_ready() {
  SegmentType.tp_name = "nearcache._native.Segment";
  SegmentType.tp_basicsize = sizeof(SegmentObject);
  SegmentType.tp_flags = Py_TPFLAGS_DEFAULT;
  SegmentType.tp_doc = "A read-only mapping of a nearcache shared-memory segment.";
  SegmentType.tp_new = Segment_new;
  SegmentType.tp_dealloc = (destructor)Segment_dealloc;
  SegmentType.tp_methods = Segment_methods;
  SegmentType.tp_getset = Segment_getset;
  return PyType_Ready(&SegmentType);
}

}  // namespace nearcache::py
