// daemon/server/repair_file.cc — see repair_file.h. Native-endian binary (the
// file never leaves the host): magic, then the fields, then a checksum.
#include "server/repair_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <ctime>
#include <cstring>

#include "redis/slots.h"

namespace nearcache::daemon {

namespace {

constexpr char kMagic[8] = {'N', 'C', 'S', 'N', 'A', 'P', '0', '1'};   // one server
constexpr char kMagic2[8] = {'N', 'C', 'S', 'N', 'A', 'P', '0', '2'};  // a cluster's masters

uint64_t fnv(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

template <class T>
void put(std::string& b, T v) {
  b.append(reinterpret_cast<const char*>(&v), sizeof v);
}
void put_str(std::string& b, const std::string& s) {
  put(b, uint32_t(s.size()));
  b += s;
}

// The tags both versions share.
void put_tags(std::string& b, const redis::Snapshot& s) {
  put_str(b, s.repl.replid);
  put_str(b, s.repl.replid2);
  put(b, s.repl.offset);
  put(b, s.repl.offset2);
  put(b, s.clears);
  put_str(b, s.marker);
}

struct Cursor {
  const std::string& b;
  size_t at = 0;
  template <class T>
  bool get(T* v) {
    if (b.size() - at < sizeof *v) return false;
    std::memcpy(v, b.data() + at, sizeof *v);
    at += sizeof *v;
    return true;
  }
  bool get_str(std::string* s) {
    uint32_t n;
    if (!get(&n) || n > 4096 || b.size() - at < n) return false;
    s->assign(b.data() + at, n);
    at += n;
    return true;
  }
  bool get_tags(redis::Snapshot* s) {
    return get_str(&s->repl.replid) && get_str(&s->repl.replid2) && get(&s->repl.offset) && get(&s->repl.offset2) &&
           get(&s->clears) && get_str(&s->marker);
  }
};

// Version 2: per master its home slot, time, tags, proof, then (slot, counter) of the slots it served.
void put_masters(std::string& b, const std::vector<redis::MasterSnapshot>& ms) {
  put(b, uint32_t(ms.size()));
  for (const redis::MasterSnapshot& m : ms) {
    put(b, int32_t(m.home_slot));
    put(b, m.mono_ms);
    put_tags(b, m.snap);
    put_str(b, m.snap.proof);
    std::string pairs;
    uint32_t n = 0;
    for (uint32_t i = 0; i < redis::kSlots && i < m.owned.size(); ++i) {
      if (!m.owned[i]) continue;
      put(pairs, uint16_t(i));
      put(pairs, i < m.snap.slots.size() ? m.snap.slots[i] : int64_t(-1));
      n++;
    }
    put(b, n);
    b += pairs;
  }
}

bool get_masters(Cursor& c, std::vector<redis::MasterSnapshot>* out) {
  uint32_t count;
  if (!c.get(&count) || count > redis::kSlots) return false;
  out->resize(count);
  for (redis::MasterSnapshot& m : *out) {
    int32_t home;
    uint32_t n;
    if (!c.get(&home) || home < 0 || uint32_t(home) >= redis::kSlots || !c.get(&m.mono_ms) || !c.get_tags(&m.snap) ||
        !c.get_str(&m.snap.proof) || !c.get(&n) || n > redis::kSlots)
      return false;
    m.home_slot = home;
    m.owned.assign(redis::kSlots, false);
    m.snap.slots.assign(redis::kSlots, 0);
    for (uint32_t k = 0; k < n; ++k) {
      uint16_t slot;
      int64_t v;
      if (!c.get(&slot) || !c.get(&v) || slot >= redis::kSlots) return false;
      m.owned[slot] = true;
      m.snap.slots[slot] = v;
    }
  }
  return true;
}

}  // namespace

std::string repair_file_path(const std::string& segment, bool posix_shm, const std::string& socket) {
  return (posix_shm ? socket : segment) + ".repair";
}

uint64_t adopted_serve_ms(const SavedSnapshot& s, uint64_t now_mono_ms, uint64_t stale_grace_ms) {
  if (s.saved_mono_ms == 0 || s.saved_mono_ms > now_mono_ms) return 0;  // unknown, or another boot
  const uint64_t age = std::max(now_mono_ms - s.saved_mono_ms, s.file_age_ms);
  return age < stale_grace_ms ? stale_grace_ms - age : 0;
}

bool save_repair_file(const std::string& path, const SavedSnapshot& s, std::string* why) {
  std::string b(s.masters.empty() ? kMagic : kMagic2, sizeof kMagic);
  put(b, s.generation);
  put_str(b, s.prefix);
  if (s.masters.empty()) {
    put_tags(b, s.snap);
    put(b, uint32_t(s.snap.slots.size()));
    for (int64_t c : s.snap.slots) put(b, c);
    put(b, s.saved_mono_ms);  // last: a file without them still loads (0, no proof)
    put_str(b, s.snap.proof);
  } else {
    put(b, s.saved_mono_ms);
    put_masters(b, s.masters);
  }
  put(b, fnv(b));
  const std::string tmp = path + ".new." + std::to_string(getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return *why = "cannot create " + tmp + ": " + std::strerror(errno), false;
  const ssize_t n = ::write(fd, b.data(), b.size());
  const int e = errno;
  ::close(fd);
  if (n != ssize_t(b.size()) || ::rename(tmp.c_str(), path.c_str()) != 0) {
    ::unlink(tmp.c_str());
    return *why = "cannot write " + path + ": " + std::strerror(n < 0 ? e : errno), false;
  }
  return true;
}

bool load_repair_file(const std::string& path, SavedSnapshot* out, std::string* why) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return *why = "no snapshot (" + path + ": " + std::strerror(errno) + ")", false;
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 022) ||
      st.st_size > (1 << 20)) {
    ::close(fd);
    return *why = path + " is not a snapshot file of this user", false;
  }
  std::string b(size_t(st.st_size), '\0');
  const ssize_t n = ::read(fd, b.data(), b.size());
  ::close(fd);
  if (n != ssize_t(b.size()) || b.size() < sizeof kMagic + 8)
    return *why = path + " is not a snapshot file", false;
  const bool v2 = std::memcmp(b.data(), kMagic2, sizeof kMagic2) == 0;
  if (!v2 && std::memcmp(b.data(), kMagic, sizeof kMagic) != 0) return *why = path + " is not a snapshot file", false;
  uint64_t sum;
  std::memcpy(&sum, b.data() + b.size() - 8, 8);
  b.resize(b.size() - 8);
  if (fnv(b) != sum) return *why = path + " is corrupt (checksum)", false;
  Cursor c{b, sizeof kMagic};
  uint32_t nslots = 0;
  SavedSnapshot s;
  if (!c.get(&s.generation) || !c.get_str(&s.prefix)) return *why = path + " is truncated", false;
  if (v2) {
    if (!c.get(&s.saved_mono_ms) || !get_masters(c, &s.masters) || s.masters.empty() || c.at != b.size())
      return *why = path + " is truncated", false;
  } else {
    if (!c.get_tags(&s.snap) || !c.get(&nslots) || nslots != redis::kSlots) return *why = path + " is truncated", false;
    s.snap.slots.resize(nslots);
    for (int64_t& v : s.snap.slots)
      if (!c.get(&v)) return *why = path + " is truncated", false;
    if (!c.get(&s.saved_mono_ms)) s.saved_mono_ms = 0;
    else if (!c.get_str(&s.snap.proof)) s.snap.proof.clear();
  }
  // The file's age by the wall clock too: the monotonic one restarts at boot.
  timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  const int64_t age = (int64_t(now.tv_sec) - st.st_mtim.tv_sec) * 1000 + (now.tv_nsec - st.st_mtim.tv_nsec) / 1000000;
  s.file_age_ms = age > 0 ? uint64_t(age) : 0;
  *out = std::move(s);
  return true;
}

}  // namespace nearcache::daemon
