// client-py/native/segment.h — the shared-memory reader (shm/reader.h) as the
// Python type nearcache._native.Segment, and the lookup every hit goes through.
//
// read_value is inline here because the Django hit path (django_hit.cc) calls
// it once per hit: it stays inlinable across the two files.
#pragma once

#include "reader.h"
#include "state.h"

namespace nearcache::py {

using nearcache::shm::Reader;
using nearcache::shm::ReadResult;
using nearcache::shm::ReadStatus;

struct SegmentObject {
  PyObject_HEAD
  Reader* reader;
  PyObject* path;
};

extern PyTypeObject SegmentType;

// Fills in SegmentType and readies it; 0, or -1 with an exception set.
int segment_type_ready();

// Hits are read into a process-wide buffer, with a heap fallback when a
// decode re-enters (a pickled object's __setstate__ may itself read the cache).
inline unsigned char* g_buf = nullptr;
inline size_t g_cap = 0;
inline bool g_buf_busy = false;

struct Hit {
  unsigned char* p = nullptr;
  size_t len = 0;
  uint8_t flags = 0;
  bool global = false;
  Hit() = default;
  Hit(const Hit&) = delete;
  Hit& operator=(const Hit&) = delete;
  ~Hit() {
    if (global) g_buf_busy = false;
    else PyMem_Free(p);
  }
};

// Returns the reader status; on a hit `h` holds the value bytes and flags.
inline ReadStatus read_value(Reader* r, const char* key, size_t klen, Hit* h) {
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

// What a lookup means to a client: a hit, a definite miss (kAbsent: the
// reader found a negative entry, or nothing in a table whose header says it
// is the whole truth), or anything else (ask the daemon). Python sees the
// ReadStatus codes, with kAbsent in place of such a miss; NEGATIVE stays
// itself. A key over key_limit is never definite: the daemon says why.
inline constexpr int kAbsent = 16;
inline int lookup_code(const Reader* r, ReadStatus s, size_t klen) {
  if (s == ReadStatus::miss && r && klen <= r->key_limit() && r->authoritative()) return kAbsent;
  return int(s);
}
inline bool definite_miss(int code) { return code == kAbsent || code == int(ReadStatus::negative); }

// The reader of a Segment, or nullptr for none (socket only).
inline Reader* segment_reader(SegmentObject* seg) { return seg ? seg->reader : nullptr; }

}  // namespace nearcache::py
