// shm/reader.cc — see reader.h. Only the C++ standard library and POSIX.
#include "reader.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "siphash.h"
#include "words.h"

namespace nearcache::shm {

namespace {

// This process's pid, refreshed in a fork() child, so that a child claims
// its own counter slot without calling getpid() on the hot path.
std::atomic<uint32_t> g_pid{0};
std::atomic<uint64_t> g_hits{0}, g_misses{0}, g_busy{0};

void on_fork_child() { g_pid.store(uint32_t(getpid()), std::memory_order_relaxed); }

uint32_t current_pid() {
  uint32_t p = g_pid.load(std::memory_order_relaxed);
  if (p == 0) {
    static const bool registered = [] { return pthread_atfork(nullptr, nullptr, on_fork_child) == 0; }();
    (void)registered;
    p = uint32_t(getpid());
    g_pid.store(p, std::memory_order_relaxed);
  }
  return p;
}

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
  hints_ = o.hints_; hints_size_ = o.hints_size_; freq_ = o.freq_; slots_ = o.slots_;
  mine_.store(o.mine_.load()); mine_pid_.store(o.mine_pid_.load());
  o.base_ = nullptr; o.hints_ = nullptr; o.freq_ = nullptr; o.slots_ = nullptr;
  o.mine_.store(nullptr);
  o.close();
  return *this;
}

void Reader::close() {
  if (base_ && owned_) munmap(const_cast<unsigned char*>(base_), size_);
  owned_ = false;
  if (hints_) munmap(hints_, hints_size_);
  base_ = nullptr; size_ = 0; header_ = nullptr; buckets_ = nullptr; data_ = nullptr;
  hints_ = nullptr; hints_size_ = 0; freq_ = nullptr; slots_ = nullptr;
  mine_.store(nullptr); mine_pid_.store(0);
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

  if (opts.use_hints) {
    std::string hp = opts.hints_path.empty() ? path + ".hints" : opts.hints_path;
    int hfd = open_object(hp, opts.posix_shm, O_RDWR);
    struct stat hst;
    const uint64_t want = hints_total_bytes(bucket_count_);
    if (hfd >= 0 && fstat(hfd, &hst) == 0 && uint64_t(hst.st_size) == want) {
      void* hm = mmap(nullptr, want, PROT_READ | PROT_WRITE, MAP_SHARED, hfd, 0);
      if (hm != MAP_FAILED) {
        auto* hh = static_cast<HintsHeader*>(hm);
        if (load_relaxed(&hh->magic) == kHintsMagic && load_relaxed(&hh->generation) == generation_ &&
            load_relaxed(&hh->counter_slots) == kCounterSlots) {
          hints_ = static_cast<unsigned char*>(hm);
          hints_size_ = want;
          slots_ = reinterpret_cast<ReaderCounters*>(hints_ + kHintsCountersOffset);
          freq_ = hints_ + kHintsFreqOffset;
        } else {
          munmap(hm, want);
        }
      }
    }
    if (hfd >= 0) ::close(hfd);
  }
  return 0;
}

bool Reader::alive(uint64_t now) const {
  if (!base_) return false;
  if (load_relaxed(&header_->state) != uint32_t(SegmentState::running)) return false;
  uint64_t hb = load_relaxed(&header_->heartbeat_ms);
  return hb + grace_ms_ >= now;
}

ReaderCounters* Reader::counters() {
  if (!slots_) return nullptr;
  uint32_t pid = current_pid();
  ReaderCounters* c = mine_.load(std::memory_order_relaxed);
  if (c && mine_pid_.load(std::memory_order_relaxed) == pid) return c;
  // Claim a free slot (1..n-1); slot 0 is shared when none is free.
  c = &slots_[0];
  for (uint32_t i = 1; i < kCounterSlots; ++i) {
    uint32_t expected = 0;
    if (__atomic_compare_exchange_n(&slots_[i].pid, &expected, pid, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED) ||
        expected == pid) {
      c = &slots_[i];
      break;
    }
  }
  mine_.store(c, std::memory_order_relaxed);
  mine_pid_.store(pid, std::memory_order_relaxed);
  return c;
}

// Counts with a relaxed load and store, not an atomic add: a locked
// instruction would wait for the hint byte's store to reach memory, which
// after a cache miss costs a whole DRAM round trip on every hit. The slot is
// this process's own, so only threads of one process racing on the same
// counter can lose an increment (never with the GIL held).
void Reader::note(ReadStatus s) {
  auto bump = [](uint64_t* p) { store_relaxed(p, load_relaxed(p) + 1); };
  auto bump_local = [](std::atomic<uint64_t>& a) { a.store(a.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed); };
  ReaderCounters* c = counters();
  switch (s) {
    case ReadStatus::hit:
      bump_local(g_hits);
      if (c) bump(&c->hits);
      break;
    case ReadStatus::miss:
      bump_local(g_misses);
      if (c) bump(&c->misses);
      break;
    case ReadStatus::busy:
      bump_local(g_busy);
      if (c) bump(&c->busy);
      break;
    default:
      break;
  }
}

ReaderTotals Reader::totals() {
  return {g_hits.load(std::memory_order_relaxed), g_misses.load(std::memory_order_relaxed),
          g_busy.load(std::memory_order_relaxed)};
}

ReadResult Reader::get(const void* key, size_t key_len, void* buf, size_t cap) {
  return get_at(key, key_len, buf, cap, monotonic_ms());
}

ReadResult Reader::get_at(const void* key, size_t key_len, void* buf, size_t cap, uint64_t now) {
  ReadResult r;
  if (!alive(now)) return r;  // unavailable
  if (key_len > key_limit_) {
    r.status = ReadStatus::miss;  // cannot be stored; the daemon will say why
    return r;
  }
  const uint64_t h = key_hash(hash_key_, key, key_len);
  for (int attempt = 0; attempt <= kMaxRetries; ++attempt) {
    Walk w = walk(key, uint32_t(key_len), h, buf, cap, now, &r);
    if (w != Walk::changed) {
      if (w == Walk::absent) r.status = ReadStatus::miss;
      note(r.status);
      return r;
    }
    r.retries++;
    cpu_relax();
  }
  r.status = ReadStatus::busy;
  note(r.status);
  return r;
}

// One attempt at the key's two buckets. Every value taken from the segment
// is bounds-checked before use; anything inconsistent is either a
// concurrent change (the version re-check says so) or corruption (a miss).
Reader::Walk Reader::walk(const void* key, uint32_t klen, uint64_t hash, void* buf, size_t cap, uint64_t now,
                          ReadResult* out) {
  const uint16_t tag = tag_of(hash);
  const BucketPair pair = buckets_of(hash, bucket_count_);
  __builtin_prefetch(&buckets_[pair.second]);  // both lines in flight at once
  for (const uint32_t idx : {pair.first, pair.second}) {
    const Bucket* b = &buckets_[idx];
    const uint32_t v1 = load_acquire(&b->version);
    if (v1 & 1) return Walk::changed;
    for (uint32_t i = 0; i < kWaysPerBucket; ++i) {
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
      if (status == ReadStatus::hit && freq_) {
        uint8_t* f = freq_ + uint64_t(idx) * 8 + i;
        uint8_t cur = load_relaxed(f);
        if (cur < kMaxFreq) store_relaxed(f, uint8_t(cur + 1));
      }
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
