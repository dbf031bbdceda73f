// shm/reader.cc — see reader.h. Only the C++ standard library and POSIX.
#include "reader.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "hits.h"
#include "siphash.h"
#include "words.h"

namespace nearcache::shm {

namespace {

std::atomic<uint64_t> g_hits{0}, g_misses{0}, g_busy{0}, g_local_misses{0};

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

int open_object(const std::string& path, bool posix_shm, int flags) {
  return posix_shm ? shm_open(path.c_str(), flags | O_CLOEXEC, 0) : ::open(path.c_str(), flags | O_CLOEXEC);
}

int fail(std::string* why, int err, const std::string& msg) {
  if (why) *why = msg;
  return err;
}

}  // namespace

const char* read_status_name(ReadStatus s) {
  switch (s) {
    case ReadStatus::hit: return "hit";
    case ReadStatus::miss: return "miss";
    case ReadStatus::busy: return "busy";
    case ReadStatus::unavailable: return "unavailable";
    case ReadStatus::too_small: return "too_small";
    case ReadStatus::negative: return "negative";
    case ReadStatus::suspended: return "suspended";
  }
  return "?";
}

Reader& Reader::operator=(Reader&& o) noexcept {
  if (this == &o) return *this;
  close();
  base_ = o.base_; size_ = o.size_; owned_ = o.owned_; header_ = o.header_; buckets_ = o.buckets_;
  data_ = o.data_; data_bytes_ = o.data_bytes_;
  bucket_count_ = o.bucket_count_;
  key_limit_ = o.key_limit_; value_limit_ = o.value_limit_; grace_ms_ = o.grace_ms_;
  writer_pid_ = o.writer_pid_; generation_ = o.generation_;
  hash_key_[0] = o.hash_key_[0]; hash_key_[1] = o.hash_key_[1];
  hits_ = o.hits_;
  o.base_ = nullptr; o.hits_ = nullptr;
  o.close();
  return *this;
}

void Reader::close() {
  if (base_ && owned_) munmap(const_cast<unsigned char*>(base_), size_);
  owned_ = false;
  base_ = nullptr; size_ = 0; header_ = nullptr; buckets_ = nullptr; data_ = nullptr;
  hits_ = nullptr;
  generation_ = 0;
}

int Reader::attach(const void* base, size_t size, std::string* why) {
  close();
  return validate(static_cast<const unsigned char*>(base), size, why);
}

// Checks the header against the mapped size and takes a private copy of the
// geometry: later changes to the header cannot move a reader out of bounds.
int Reader::validate(const unsigned char* base, size_t size, std::string* why) {
  if (size < kHeaderBytes) return fail(why, EINVAL, "too small to be a nearcache segment");
  auto* h = reinterpret_cast<const Header*>(base);
  auto bad = [&](int err, const std::string& msg) { return fail(why, err, msg); };

  // The writer publishes the immutable fields with a release store of state.
  uint32_t state = load_acquire(&h->state);
  if (load_relaxed(&h->magic) != kMagic) return bad(EINVAL, "not a nearcache segment (bad magic)");
  uint32_t version = load_relaxed(&h->layout_version);
  if (version != kLayoutVersion)
    return bad(EPROTONOSUPPORT, "layout version " + std::to_string(version) + ", this reader knows " +
                                    std::to_string(kLayoutVersion));
  if (state == uint32_t(SegmentState::initializing)) return bad(EAGAIN, "still being created");

  const uint64_t seg = load_relaxed(&h->segment_bytes);
  const uint64_t boff = load_relaxed(&h->buckets_offset);
  const uint32_t nb = load_relaxed(&h->bucket_count);
  const uint64_t doff = load_relaxed(&h->data_offset), dbytes = load_relaxed(&h->data_bytes);
  const uint32_t klim = load_relaxed(&h->key_limit), vlim = load_relaxed(&h->value_limit);
  if (load_relaxed(&h->header_bytes) != kHeaderBytes) return bad(EINVAL, "unexpected header size");
  if (seg != size) return bad(EINVAL, "size in header does not match the file");
  if (nb == 0 || boff < kHeaderBytes || boff % kBucketBytes || load_relaxed(&h->bucket_ways) != kWaysPerBucket)
    return bad(EINVAL, "bad bucket geometry");
  if (boff > seg || uint64_t(nb) * kBucketBytes > seg - boff) return bad(EINVAL, "buckets run past the segment");
  const uint64_t bucket_end = boff + uint64_t(nb) * kBucketBytes;  // cannot overflow: checked above
  if (bucket_end > doff || doff % kBucketBytes || dbytes % kItemAlign || dbytes < kItemHeaderBytes ||
      doff > seg || dbytes > seg - doff)
    return bad(EINVAL, "bad data geometry");
  if (klim == 0 || klim > kMaxKeyLimit || vlim > dbytes) return bad(EINVAL, "bad limits");

  base_ = base;
  size_ = size;
  header_ = h;
  buckets_ = reinterpret_cast<const Bucket*>(base + boff);
  data_ = base + doff;
  data_bytes_ = dbytes;
  bucket_count_ = nb;
  key_limit_ = klim;
  value_limit_ = vlim;
  grace_ms_ = load_relaxed(&h->heartbeat_grace_ms);
  writer_pid_ = load_relaxed(&h->writer_pid);
  generation_ = load_relaxed(&h->generation);
  hash_key_[0] = load_relaxed(&h->hash_key[0]);
  hash_key_[1] = load_relaxed(&h->hash_key[1]);
  return 0;
}

int Reader::open(const std::string& path, std::string* why, const ReaderOptions& opts) {
  close();
  int fd = open_object(path, opts.posix_shm, O_RDONLY);
  if (fd < 0) {
    int e = errno;
    return fail(why, e, "cannot open segment " + path + ": " + std::strerror(e));
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || st.st_size < off_t(kHeaderBytes)) {
    ::close(fd);
    return fail(why, EINVAL, "segment " + path + " is too small to be a nearcache segment");
  }
  size_t size = size_t(st.st_size);
  // MAP_POPULATE builds the page tables now: lookups never take a page fault.
  void* m = mmap(nullptr, size, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0);
  ::close(fd);
  if (m == MAP_FAILED) {
    int e = errno;
    return fail(why, e, "cannot map segment " + path + ": " + std::strerror(e));
  }
  // Huge pages, where the kernel allows them for shared memory
  // (transparent_hugepage/shmem_enabled = advise): far fewer TLB misses.
  madvise(m, size, MADV_HUGEPAGE);
  int rc = validate(static_cast<const unsigned char*>(m), size, why);
  if (rc != 0) {
    munmap(m, size);
    if (why) *why = "segment " + path + ": " + *why;
    return rc;
  }
  owned_ = true;
  return 0;
}

void Reader::attach_hits(HitRegion* region) {
  hits_ = region;
  if (hits_ && base_) hits_->set_generation(generation_);
}

bool Reader::alive(uint64_t now) const {
  if (!base_) return false;
  if (load_relaxed(&header_->state) != uint32_t(SegmentState::running)) return false;
  // A table re-created in place of this one (a cold start that reuses the
  // object) has another generation and geometry: stop at once, re-open.
  if (load_relaxed(&header_->table_id) != uint32_t(generation_)) return false;
  uint64_t hb = load_relaxed(&header_->heartbeat_ms);
  return hb + grace_ms_ >= now;
}

// Counts with a relaxed load and store, not an atomic add (see HitRegion::hit).
void Reader::note(ReadStatus s, uint32_t way_index) {
  auto bump_local = [](std::atomic<uint64_t>& a) { a.store(a.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed); };
  switch (s) {
    case ReadStatus::hit:
      bump_local(g_hits);
      if (hits_) hits_->hit(way_index);
      break;
    case ReadStatus::miss:
    case ReadStatus::negative:
      bump_local(g_misses);
      if (hits_) hits_->miss();
      break;
    case ReadStatus::busy:
      bump_local(g_busy);
      if (hits_) hits_->busy();
      break;
    default:
      break;
  }
}

void Reader::note_local_miss() {
  g_local_misses.store(g_local_misses.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  if (hits_) hits_->local_miss();
}

ReaderTotals Reader::totals() {
  return {g_hits.load(std::memory_order_relaxed), g_misses.load(std::memory_order_relaxed),
          g_busy.load(std::memory_order_relaxed), g_local_misses.load(std::memory_order_relaxed)};
}

ReadResult Reader::get(const void* key, size_t key_len, void* buf, size_t cap) {
  return get_at(key, key_len, buf, cap, monotonic_ms());
}

ReadResult Reader::get_at(const void* key, size_t key_len, void* buf, size_t cap, uint64_t now) {
  ReadResult r;
  if (!alive(now)) return r;  // unavailable
  if (load_relaxed(&header_->flags) & kFlagSuspended) {
    r.status = ReadStatus::suspended;
    return r;
  }
  if (key_len > key_limit_) {
    r.status = ReadStatus::miss;  // cannot be stored; the daemon will say why
    return r;
  }
  const uint64_t h = key_hash(hash_key_, key, key_len);
  uint32_t way_index = 0;
  for (int attempt = 0; attempt <= kMaxRetries; ++attempt) {
    Walk w = walk(key, uint32_t(key_len), h, buf, cap, now, &r, &way_index);
    if (w != Walk::changed) {
      if (w == Walk::absent) r.status = ReadStatus::miss;
      note(r.status, way_index);
      return r;
    }
    r.retries++;
    cpu_relax();
  }
  r.status = ReadStatus::busy;
  note(r.status, 0);
  return r;
}

// One attempt at the key's two buckets. Every value taken from the segment
// is bounds-checked before use; anything inconsistent is either a
// concurrent change (the version re-check says so) or corruption (a miss).
Reader::Walk Reader::walk(const void* key, uint32_t klen, uint64_t hash, void* buf, size_t cap, uint64_t now,
                          ReadResult* out, uint32_t* way_index) {
  const uint16_t tag = tag_of(hash);
  const BucketPair pair = buckets_of(hash, bucket_count_);
  __builtin_prefetch(&buckets_[pair.second]);  // both lines in flight at once
  for (const uint32_t idx : {pair.first, pair.second}) {
    const Bucket* b = &buckets_[idx];
    const uint32_t v1 = load_acquire(&b->version);
    if (v1 & 1) return Walk::changed;
    // A bucket of an older epoch is empty (a whole-table drop). The writer
    // stores the new header epoch before it resets or reuses anything, and
    // resets a stale bucket inside its seqlock before reusing its items'
    // memory, so a bucket read here with its current epoch is consistent.
    const uint32_t ways = load_relaxed(&b->epoch) == load_relaxed(&header_->epoch) ? kWaysPerBucket : 0;
    for (uint32_t i = 0; i < ways; ++i) {
      const uint64_t way = load_relaxed(&b->way[i]);
      if (way == 0 || way_tag(way) != tag) continue;
      const uint64_t unit = way_unit(way);
      if (unit > (data_bytes_ - kItemHeaderBytes) / kItemAlign) continue;  // corrupt
      const uint64_t off = unit * kItemAlign;
      // The value's first lines are needed right after the header: fetching
      // them together saves a dependent memory round trip (prefetches never fault).
      for (uint64_t line = 64; line < 256; line += 64) __builtin_prefetch(data_ + off + line);
      const auto* item = reinterpret_cast<const ItemHeader*>(data_ + off);
      const uint64_t expiry = load_relaxed(&item->expiry_ms);
      const uint64_t meta = load_relaxed(&item->meta);
      const uint32_t vlen = meta_value_len(meta);
      if (meta_key_len(meta) != klen || vlen > value_limit_) continue;
      const uint64_t key_off = off + kItemHeaderBytes;
      if (data_bytes_ - key_off < uint64_t(klen) + vlen) continue;  // item runs past the data area
      if (!equal_shared(data_, key_off, key, klen)) continue;

      ReadStatus status;
      if (expiry != 0 && expiry <= now) {
        status = ReadStatus::miss;
      } else if (meta_negative(meta)) {
        status = ReadStatus::negative;
      } else if (vlen > cap) {
        status = ReadStatus::too_small;
      } else {
        copy_from_shared(buf, data_, key_off + klen, vlen);
        status = ReadStatus::hit;
      }
      __atomic_thread_fence(__ATOMIC_ACQUIRE);
      if (load_relaxed(&b->version) != v1) return Walk::changed;
      out->status = status;
      out->value_len = vlen;
      out->flags = meta_flags(meta);
      out->expiry_ms = expiry;
      *way_index = idx * 8 + i;
      return Walk::found;
    }
    // A key the writer moved into this bucket while we scanned it would be
    // missed: re-check, so that a miss is a consistent answer for this bucket.
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (load_relaxed(&b->version) != v1) return Walk::changed;
  }
  return Walk::absent;
}

}  // namespace nearcache::shm
