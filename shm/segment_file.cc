// shm/segment_file.cc — see segment_file.h.
#include "segment_file.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/interprocess/file_mapping.hpp>
#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/shared_memory_object.hpp>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>

namespace nearcache::shm {

namespace bip = boost::interprocess;

struct MappedObject::Region {
  bip::mapped_region region;
  uint64_t dev = 0, ino = 0;  // of the object mapped (fstat of the fd Boost mapped)
  uint32_t uid = 0, mode = 0;
};

MappedObject::~MappedObject() = default;

void MappedObject::take(std::unique_ptr<Region> region) {
  data_ = static_cast<unsigned char*>(region->region.get_address());
  size_ = region->region.get_size();
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

template <class Mappable>
int map_rw(const Mappable& m, std::unique_ptr<MappedObject::Region>* region, std::string* why, const std::string& shown) {
  try {
    auto r = std::make_unique<MappedObject::Region>();
    struct stat st;
    if (fstat(m.get_mapping_handle().handle, &st) != 0) {
      const int e = errno;
      return fail(why, e, "cannot stat " + shown + ": " + std::strerror(e));
    }
    r->dev = uint64_t(st.st_dev), r->ino = uint64_t(st.st_ino);
    r->uid = uint32_t(st.st_uid), r->mode = uint32_t(st.st_mode & 07777);
    r->region = bip::mapped_region(m, bip::read_write);
    // Huge pages where the kernel allows them for shared memory (shmem THP "advise").
    madvise(r->region.get_address(), r->region.get_size(), MADV_HUGEPAGE);
    *region = std::move(r);
    return 0;
  } catch (const bip::interprocess_exception& e) {
    return fail(why, e.get_native_error() ? e.get_native_error() : EIO,
                "cannot map " + shown + ": " + e.what());
  }
}

}  // namespace

int create_object(const ObjectSpec& spec, uint64_t bytes, std::unique_ptr<MappedObject>* out, std::string* why) {
  auto obj = std::make_unique<MappedObject>();
  std::unique_ptr<MappedObject::Region> region;
  if (spec.posix_shm) {
    try {
      bip::shared_memory_object::remove(spec.name.c_str());
      bip::shared_memory_object shm(bip::create_only, spec.name.c_str(), bip::read_write,
                                    bip::permissions(spec.mode));
      int rc = prepare_fd(shm.get_mapping_handle().handle, spec, bytes, "shared memory " + spec.name, why);
      if (rc != 0) {
        bip::shared_memory_object::remove(spec.name.c_str());
        return rc;
      }
      rc = map_rw(shm, &region, why, "shared memory " + spec.name);
      if (rc != 0) return rc;
    } catch (const bip::interprocess_exception& e) {
      return fail(why, e.get_native_error() ? e.get_native_error() : EIO,
                  "cannot create shared memory " + spec.name + ": " + e.what());
    }
  } else {
    // Boost.Interprocess maps files but cannot create them with a mode; the
    // file is created here (O_EXCL, exact mode via fchmod) and mapped by Boost.
    const std::string tmp = temp_name(spec);
    ::unlink(tmp.c_str());
    int fd = ::open(tmp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
      int e = errno;
      return fail(why, e, "cannot create " + tmp + ": " + std::strerror(e));
    }
    int rc = prepare_fd(fd, spec, bytes, spec.name, why);
    ::close(fd);
    if (rc == 0) {
      try {
        bip::file_mapping fm(tmp.c_str(), bip::read_write);
        rc = map_rw(fm, &region, why, tmp);
      } catch (const bip::interprocess_exception& e) {
        rc = fail(why, EIO, "cannot open " + tmp + ": " + e.what());
      }
    }
    if (rc != 0) {
      ::unlink(tmp.c_str());
      return rc;
    }
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
  auto obj = std::make_unique<MappedObject>();
  std::unique_ptr<MappedObject::Region> region;
  int rc;
  try {
    if (spec.posix_shm) {
      bip::shared_memory_object shm(bip::open_only, spec.name.c_str(), bip::read_write);
      rc = map_rw(shm, &region, why, spec.name);
    } else {
      bip::file_mapping fm(spec.name.c_str(), bip::read_write);
      rc = map_rw(fm, &region, why, spec.name);
    }
  } catch (const bip::interprocess_exception& e) {
    return fail(why, e.get_native_error() ? e.get_native_error() : ENOENT,
                "cannot open " + spec.name + ": " + e.what());
  }
  if (rc != 0) return rc;
  obj->take(std::move(region));
  *out = std::move(obj);
  return 0;
}

int reserve_object(const ObjectSpec& spec, uint64_t bytes, std::string* why) {
  const int fd = spec.posix_shm ? shm_open(spec.name.c_str(), O_RDWR | O_CLOEXEC, 0)
                                : ::open(spec.name.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    const int e = errno;
    return fail(why, e, "cannot open " + spec.name + ": " + std::strerror(e));
  }
  int rc = 0;
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
  if (spec.posix_shm)
    bip::shared_memory_object::remove(spec.name.c_str());
  else
    bip::file_mapping::remove(spec.name.c_str());
}

ObjectLock::~ObjectLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the flock; the lock file stays (removing it would race)
}

int ObjectLock::acquire(const ObjectSpec& spec, std::unique_ptr<ObjectLock>* out, std::string* why) {
  const std::string name = spec.name + ".lock";
  auto open_lock = [&] {
    return spec.posix_shm ? shm_open(name.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600)
                          : ::open(name.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  };
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
      return fail(why, e, "cannot open lock " + name + ": " + std::strerror(e));
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
