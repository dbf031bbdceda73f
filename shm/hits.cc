// shm/hits.cc — see hits.h.
#include "hits.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace nearcache::shm {

namespace {

int fail(std::string* why, int err, const std::string& msg) {
  if (why) *why = msg;
  return err;
}

// Reads exactly n bytes at off; false on an error or a short read.
bool pread_all(int fd, void* buf, size_t n, uint64_t off) {
  auto* p = static_cast<unsigned char*>(buf);
  while (n > 0) {
    const ssize_t r = ::pread(fd, p, n, off_t(off));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r, n -= size_t(r), off += uint64_t(r);
  }
  return true;
}

}  // namespace

// ---------------------------------------------------------------- the owner's side

std::unique_ptr<HitRegion> HitRegion::create(std::string* why) {
  std::unique_ptr<HitRegion> r(new HitRegion());
  auto bad = [&](const char* what) {
    const int e = errno;
    fail(why, e, std::string("hit region: ") + what + ": " + std::strerror(e));
    return nullptr;
  };
  r->fd_ = memfd_create("nearcache-hits", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (r->fd_ < 0) return bad("memfd_create");
  if (ftruncate(r->fd_, off_t(kHitRegionBytes)) != 0) return bad("ftruncate");
  if (fcntl(r->fd_, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) return bad("F_ADD_SEALS");
  void* m = mmap(nullptr, kHitRegionBytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, r->fd_, 0);
  if (m == MAP_FAILED) return bad("mmap");
  r->h_ = static_cast<HitRegionHeader*>(m);
  r->ring_ = reinterpret_cast<uint32_t*>(static_cast<unsigned char*>(m) + sizeof(HitRegionHeader));
  r->h_->version = kHitRegionVersion;
  r->h_->ring_entries = kHitRing;
  store_relaxed(&r->h_->magic, kHitMagic);
  return r;
}

HitRegion::~HitRegion() {
  if (h_) munmap(h_, kHitRegionBytes);
  if (fd_ >= 0) ::close(fd_);
}

// ---------------------------------------------------------------- the daemon's side

int HitSource::adopt(int fd, uint64_t now_ms, std::unique_ptr<HitSource>* out, std::string* why) {
  auto refuse = [&](int err, const std::string& msg) {
    ::close(fd);
    return fail(why, err, msg);
  };
  if (fd < 0) return fail(why, EINVAL, "no file descriptor");
  const int seals = fcntl(fd, F_GET_SEALS);
  if (seals < 0) return refuse(EINVAL, "not a sealable memory file (memfd_create with MFD_ALLOW_SEALING)");
  if ((seals & (F_SEAL_SHRINK | F_SEAL_GROW)) != (F_SEAL_SHRINK | F_SEAL_GROW))
    return refuse(EPERM, "not sealed against shrinking and growing (F_SEAL_SHRINK | F_SEAL_GROW)");
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return refuse(EINVAL, "not a regular memory file");
  if (uint64_t(st.st_size) != kHitRegionBytes)
    return refuse(EINVAL, "size " + std::to_string(st.st_size) + ", a hit region is " +
                              std::to_string(kHitRegionBytes) + " bytes");
  // Reads must never block the loop: a memfd never does, but say so anyway.
  const int fl = fcntl(fd, F_GETFL);
  if (fl >= 0) fcntl(fd, F_SETFL, fl | O_NONBLOCK);
  std::unique_ptr<HitSource> s(new HitSource());
  s->fd_ = fd;
  s->last_ms_ = now_ms;
  // Counting starts now: a process's region also holds what it counted for
  // another daemon (or before a restart), which is not this daemon's to report.
  HitRegionHeader h;
  if (pread_all(fd, &h, sizeof h, 0) && h.magic == kHitMagic && h.version == kHitRegionVersion)
    s->hits_ = h.hits, s->misses_ = h.misses, s->busy_ = h.busy, s->local_misses_ = h.local_misses, s->head_ = h.head;
  *out = std::move(s);
  return 0;
}

HitSource::~HitSource() {
  if (fd_ >= 0) ::close(fd_);
}

bool HitSource::poll(uint64_t generation, uint64_t max_index, uint64_t now_ms, std::vector<uint32_t>* ways,
                     HitDeltas* d) {
  HitRegionHeader h;
  if (!pread_all(fd_, &h, sizeof h, 0)) return false;
  const uint64_t elapsed = std::max<uint64_t>(1, now_ms > last_ms_ ? now_ms - last_ms_ : 0);
  last_ms_ = now_ms;
  const uint64_t bound = elapsed * kMaxLookupsPerMs;
  auto delta = [bound](uint64_t now, uint64_t* last) {
    const uint64_t dv = now >= *last ? now - *last : 0;  // a decrease restarts the baseline
    *last = now;
    return std::min(dv, bound);
  };
  const bool ours = h.magic == kHitMagic && h.version == kHitRegionVersion;
  if (!ours) {  // garbage (or not initialised): nothing is believed, the baselines follow
    hits_ = h.hits, misses_ = h.misses, busy_ = h.busy, local_misses_ = h.local_misses, head_ = h.head;
    return true;
  }
  d->hits += delta(h.hits, &hits_);
  d->misses += delta(h.misses, &misses_);
  d->busy += delta(h.busy, &busy_);
  d->local_misses += delta(h.local_misses, &local_misses_);

  const uint64_t head = h.head;
  uint64_t n = head >= head_ ? std::min<uint64_t>(head - head_, kHitRing) : 0;
  head_ = head;
  if (n == 0 || h.generation != generation) return true;
  // The newest n entries end at head: one or two contiguous pieces of the ring.
  uint32_t buf[kHitRing];
  const uint64_t first = (head - n) & (kHitRing - 1);
  const uint64_t part = std::min<uint64_t>(n, kHitRing - first);
  if (!pread_all(fd_, buf, part * 4, sizeof(HitRegionHeader) + first * 4)) return false;
  if (part < n && !pread_all(fd_, buf + part, (n - part) * 4, sizeof(HitRegionHeader))) return false;
  for (uint64_t i = 0; i < n; ++i)
    if (buf[i] < max_index) ways->push_back(buf[i]);
  return true;
}

}  // namespace nearcache::shm
