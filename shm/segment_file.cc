// shm/segment_file.cc — see segment_file.h.
#include "segment_file.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <dirent.h>
#include <sys/random.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>

namespace nearcache::shm {

// The mapping and what was learnt of its object (fstat of the fd mapped:
// the object checked is the object mapped, never a name looked up twice).
struct MappedObject::Region {
  void* addr = nullptr;
  size_t size = 0;
  uint64_t dev = 0, ino = 0;
  uint32_t uid = 0, mode = 0;
  ~Region() {
    if (addr) munmap(addr, size);
  }
};

MappedObject::~MappedObject() = default;

void MappedObject::take(std::unique_ptr<Region> region) {
  data_ = static_cast<unsigned char*>(region->addr);
  size_ = region->size;
  dev_ = region->dev, ino_ = region->ino;
  uid_ = region->uid, mode_ = region->mode;
  region_ = std::move(region);
}

namespace {

std::string temp_name(const ObjectSpec& spec) { return spec.name + ".new." + std::to_string(getpid()); }

int fail(std::string* why, int err, const std::string& msg) {
  if (why) *why = msg;
  return err;
}

// Where a POSIX shared-memory name lives in the file system (Linux: /dev/shm).
std::string fs_path(const std::string& name, bool posix_shm) {
  return posix_shm ? "/dev/shm/" + name.substr(name.find_first_not_of('/')) : name;
}

int open_name(const std::string& name, bool posix_shm, int flags, mode_t mode) {
  return posix_shm ? shm_open(name.c_str(), flags | O_CLOEXEC, mode)
                   : ::open(name.c_str(), flags | O_NOFOLLOW | O_CLOEXEC, mode);
}

// An object this writer may use: a regular file of this user, not writable by others.
bool trusted(const struct stat& st) {
  return S_ISREG(st.st_mode) && st.st_uid == geteuid() && !(st.st_mode & S_IWOTH);
}

std::string distrust_reason(const std::string& shown, const struct stat& st) {
  if (!S_ISREG(st.st_mode)) return shown + " is not a regular file";
  if (st.st_uid != geteuid())
    return shown + " belongs to uid " + std::to_string(st.st_uid) + ", not to this user (uid " +
           std::to_string(geteuid()) + ")";
  return shown + " is writable by others";
}

// Applies mode (exactly, regardless of umask) and group, then reserves the
// memory. ENOSPC here means the tmpfs (or /dev/shm) is too small.
int prepare_fd(int fd, const ObjectSpec& spec, uint64_t bytes, const std::string& shown, std::string* why) {
  if (fchmod(fd, spec.mode) != 0) {
    int e = errno;
    return fail(why, e, "cannot chmod " + shown + ": " + std::strerror(e));
  }
  if (spec.group >= 0 && fchown(fd, uid_t(-1), gid_t(spec.group)) != 0) {
    int e = errno;
    return fail(why, e, "cannot set group " + std::to_string(spec.group) + " on " + shown + ": " + std::strerror(e));
  }
  uint64_t avail = cgroup_memory_available();
  if (bytes > avail)
    return fail(why, ENOMEM,
                "cannot reserve " + std::to_string(bytes) + " bytes for " + shown + ": the memory limit of this cgroup " +
                    "leaves " + std::to_string(avail) + " bytes; lower segment_size or raise the limit");
  int rc = posix_fallocate(fd, 0, off_t(bytes));
  if (rc != 0)
    return fail(why, rc,
                "cannot reserve " + std::to_string(bytes) + " bytes for " + shown + ": " + std::strerror(rc) +
                    (rc == ENOSPC ? " (the filesystem holding it is too small; lower segment_size or enlarge it)" : ""));
  return 0;
}

// Maps fd read-write (its whole size); only a trusted object (see trusted()).
int map_fd(int fd, std::unique_ptr<MappedObject::Region>* region, std::string* why, const std::string& shown) {
  struct stat st;
  if (fstat(fd, &st) != 0) {
    const int e = errno;
    return fail(why, e, "cannot stat " + shown + ": " + std::strerror(e));
  }
  if (!trusted(st)) return fail(why, EPERM, distrust_reason(shown, st) + ": not mapped");
  if (st.st_size <= 0) return fail(why, EINVAL, shown + " is empty");
  void* m = mmap(nullptr, size_t(st.st_size), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (m == MAP_FAILED) {
    const int e = errno;
    return fail(why, e, "cannot map " + shown + ": " + std::strerror(e));
  }
  // Huge pages where the kernel allows them for shared memory (shmem THP "advise").
  madvise(m, size_t(st.st_size), MADV_HUGEPAGE);
  auto r = std::make_unique<MappedObject::Region>();
  r->addr = m, r->size = size_t(st.st_size);
  r->dev = uint64_t(st.st_dev), r->ino = uint64_t(st.st_ino);
  r->uid = uint32_t(st.st_uid), r->mode = uint32_t(st.st_mode & 07777);
  *region = std::move(r);
  return 0;
}

}  // namespace

int create_object(const ObjectSpec& spec, uint64_t bytes, std::unique_ptr<MappedObject>* out, std::string* why) {
  auto obj = std::make_unique<MappedObject>();
  std::unique_ptr<MappedObject::Region> region;
  // A POSIX shm name replaces the old object at once; a file is built under a
  // temporary name (O_EXCL) and renamed into place by publish_object.
  const std::string name = spec.posix_shm ? spec.name : temp_name(spec);
  const std::string shown = spec.posix_shm ? "shared memory " + spec.name : name;
  if (spec.posix_shm) shm_unlink(name.c_str());
  else ::unlink(name.c_str());
  const int fd = open_name(name, spec.posix_shm, O_RDWR | O_CREAT | O_EXCL, 0600);
  if (fd < 0) {
    const int e = errno;
    return fail(why, e, "cannot create " + shown + ": " + std::strerror(e));
  }
  int rc = prepare_fd(fd, spec, bytes, shown, why);
  if (rc == 0) rc = map_fd(fd, &region, why, shown);
  ::close(fd);
  if (rc != 0) {
    if (spec.posix_shm) shm_unlink(name.c_str());
    else ::unlink(name.c_str());
    return rc;
  }
  obj->take(std::move(region));
  *out = std::move(obj);
  return 0;
}

int publish_object(const ObjectSpec& spec, std::string* why) {
  if (spec.posix_shm) return 0;
  const std::string tmp = temp_name(spec);
  if (::rename(tmp.c_str(), spec.name.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    return fail(why, e, "cannot rename " + tmp + " to " + spec.name + ": " + std::strerror(e));
  }
  return 0;
}

int open_object_rw(const ObjectSpec& spec, std::unique_ptr<MappedObject>* out, std::string* why) {
  const int fd = open_name(spec.name, spec.posix_shm, O_RDWR, 0);
  if (fd < 0) {
    const int e = errno;
    return fail(why, e, "cannot open " + spec.name + ": " + std::strerror(e));
  }
  std::unique_ptr<MappedObject::Region> region;
  const int rc = map_fd(fd, &region, why, spec.name);
  ::close(fd);
  if (rc != 0) return rc;
  auto obj = std::make_unique<MappedObject>();
  obj->take(std::move(region));
  *out = std::move(obj);
  return 0;
}

bool foreign_object(const std::string& name, bool posix_shm, std::string* why) {
  struct stat st;
  if (lstat(fs_path(name, posix_shm).c_str(), &st) != 0) return false;  // nothing there (or nothing we can see)
  if (trusted(st)) return false;
  if (why) *why = distrust_reason(name, st);
  return true;
}

std::string fresh_object_name(const std::string& name) {
  unsigned char b[8];
  if (getrandom(b, sizeof b, 0) != ssize_t(sizeof b)) {
    std::ifstream r("/dev/urandom", std::ios::binary);
    r.read(reinterpret_cast<char*>(b), sizeof b);
  }
  char hex[17];
  for (size_t i = 0; i < sizeof b; ++i) std::snprintf(hex + 2 * i, 3, "%02x", b[i]);
  return name + "." + hex;
}

std::vector<std::string> own_fallback_names(const std::string& name, bool posix_shm) {
  const std::string path = fs_path(name, posix_shm);
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash + 1);
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  std::vector<std::string> out;
  DIR* d = opendir(dir.c_str());
  if (!d) return out;
  while (dirent* e = readdir(d)) {
    const std::string n = e->d_name;
    if (n.size() != base.size() + 17 || n.compare(0, base.size() + 1, base + ".") != 0) continue;
    if (n.find_first_not_of("0123456789abcdef", base.size() + 1) != std::string::npos) continue;
    struct stat st;
    if (lstat((dir + n).c_str(), &st) != 0 || !trusted(st)) continue;
    out.push_back(name + n.substr(base.size()));
  }
  closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

int reserve_object(const ObjectSpec& spec, uint64_t bytes, std::string* why) {
  const int fd = open_name(spec.name, spec.posix_shm, O_RDWR, 0);
  if (fd < 0) {
    const int e = errno;
    return fail(why, e, "cannot open " + spec.name + ": " + std::strerror(e));
  }
  int rc = 0;
  struct stat st;
  if (fstat(fd, &st) != 0 || !trusted(st)) {
    ::close(fd);
    return fail(why, EPERM, "cannot reserve " + spec.name + ": not this user's object");
  }
  if (fchmod(fd, spec.mode) != 0) rc = errno;
  else if (spec.group >= 0 && fchown(fd, uid_t(-1), gid_t(spec.group)) != 0) rc = errno;
  if (rc != 0) {
    ::close(fd);
    return fail(why, rc, "cannot set the mode or group of " + spec.name + ": " + std::strerror(rc));
  }
  rc = posix_fallocate(fd, 0, off_t(bytes));
  ::close(fd);
  if (rc != 0) return fail(why, rc, "cannot reserve " + std::to_string(bytes) + " bytes for " + spec.name + ": " + std::strerror(rc));
  return 0;
}

void remove_object(const ObjectSpec& spec) {
  if (spec.posix_shm) shm_unlink(spec.name.c_str());
  else ::unlink(spec.name.c_str());
}

ObjectLock::~ObjectLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the flock; the lock file stays (removing it would race)
}

int ObjectLock::acquire(const ObjectSpec& spec, std::unique_ptr<ObjectLock>* out, std::string* why) {
  const std::string name = spec.name + ".lock";
  auto open_lock = [&] { return open_name(name, spec.posix_shm, O_RDWR | O_CREAT, 0600); };
  auto same_file = [&](int fd) {  // the name still refers to the file we locked
    struct stat a, b;
    if (fstat(fd, &a) != 0) return false;
    const int nfd = open_lock();
    if (nfd < 0) return false;
    const bool same = fstat(nfd, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev;
    ::close(nfd);
    return same;
  };
  for (int attempt = 0; attempt < 16; ++attempt) {
    int fd = open_lock();
    if (fd < 0) {
      int e = errno;
      struct stat st;  // another user's lock, which this one may not even open?
      if (e == EACCES && lstat(fs_path(name, spec.posix_shm).c_str(), &st) == 0 && !trusted(st))
        return fail(why, EPERM, "lock " + distrust_reason(name, st));
      return fail(why, e, "cannot open lock " + name + ": " + std::strerror(e));
    }
    // Never lock through another user's file: whoever owns it can hold it.
    struct stat st;
    if (fstat(fd, &st) == 0 && !trusted(st)) {
      ::close(fd);
      return fail(why, EPERM, "lock " + distrust_reason(name, st));
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
      int e = errno;
      ::close(fd);
      if (e == EWOULDBLOCK)
        return fail(why, e, "segment " + spec.name + " is in use by another nearcached (lock " + name + " is held)");
      return fail(why, e, "cannot lock " + name + ": " + std::strerror(e));
    }
    if (!same_file(fd)) {  // removed by the previous holder as it stopped
      ::close(fd);
      continue;
    }
    auto lock = std::make_unique<ObjectLock>();
    lock->fd_ = fd;
    lock->name_ = name;
    lock->posix_shm_ = spec.posix_shm;
    *out = std::move(lock);
    return 0;
  }
  return fail(why, EAGAIN, "cannot lock " + name + ": it keeps being replaced");
}

void ObjectLock::remove() {
  if (fd_ < 0) return;
  if (posix_shm_)
    shm_unlink(name_.c_str());
  else
    ::unlink(name_.c_str());
}

uint64_t cgroup_memory_available() {
  constexpr uint64_t kUnlimited = std::numeric_limits<uint64_t>::max();
  auto read_u64 = [](const std::string& file, uint64_t* v) {
    std::ifstream f(file);
    std::string s;
    if (!(f >> s) || s == "max") return false;
    try {
      *v = std::stoull(s);
    } catch (...) {
      return false;
    }
    return true;
  };
  // cgroup v2 ("0::/path": memory.max) or v1 ("N:memory:/path": memory.limit_in_bytes).
  std::ifstream cg("/proc/self/cgroup");
  std::string line;
  uint64_t avail = kUnlimited;
  while (std::getline(cg, line)) {
    std::string max_file, cur_file;
    if (line.rfind("0::", 0) == 0) {
      const std::string dir = "/sys/fs/cgroup" + line.substr(3);
      max_file = dir + "/memory.max";
      cur_file = dir + "/memory.current";
    } else if (auto p = line.find(":memory:"); p != std::string::npos) {
      const std::string dir = "/sys/fs/cgroup/memory" + line.substr(p + 8);
      max_file = dir + "/memory.limit_in_bytes";
      cur_file = dir + "/memory.usage_in_bytes";
    } else {
      continue;
    }
    uint64_t max = 0, cur = 0;
    if (!read_u64(max_file, &max) || max >= (uint64_t{1} << 62)) continue;  // v1 says "unlimited" with a huge value
    if (!read_u64(cur_file, &cur)) cur = 0;
    avail = std::min(avail, max > cur ? max - cur : 0);
  }
  return avail;
}

}  // namespace nearcache::shm
