// shm/segment_file.h — creating, locking, mapping and removing the writer's
// shared-memory objects (the segment and its lock).
//
// An object is either a file (default: in the runtime directory next to the
// daemon's socket, on a tmpfs such as /run) or a POSIX shared-memory name.
// Files are created under a temporary name and renamed into place, so a
// reader never opens a half-built segment and readers of the previous one
// keep their mapping. Objects of another user are never mapped nor locked
// through (foreign_object, fresh_object_name). Memory is reserved with posix_fallocate at creation:
// if the tmpfs or the cgroup's memory limit cannot hold the segment, creation
// fails with a clear message instead of a SIGBUS later.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace nearcache::shm {

struct ObjectSpec {
  std::string name;        // file path, or "/name" when posix_shm
  bool posix_shm = false;
  unsigned mode = 0640;    // exact permissions (umask does not apply)
  int64_t group = -1;      // gid to fchown to; -1 keeps the creator's group
};

// A read-write mapping of one object; unmapped on destruction.
class MappedObject {
 public:
  MappedObject() = default;
  ~MappedObject();
  MappedObject(const MappedObject&) = delete;
  MappedObject& operator=(const MappedObject&) = delete;

  unsigned char* data() const { return data_; }
  uint64_t size() const { return size_; }
  // st_dev and st_ino of the object mapped: a reader checks it maps the same.
  uint64_t dev() const { return dev_; }
  uint64_t ino() const { return ino_; }
  // Owner and permission bits at mapping time (adoption trusts only its own user's object).
  uint32_t uid() const { return uid_; }
  uint32_t mode() const { return mode_; }

  struct Region;  // the Boost.Interprocess mapping, kept out of this header

 private:
  friend int create_object(const ObjectSpec&, uint64_t, std::unique_ptr<MappedObject>*, std::string*);
  friend int open_object_rw(const ObjectSpec&, std::unique_ptr<MappedObject>*, std::string*);
  void take(std::unique_ptr<Region> region);  // the mapping and what was learnt of its object
  std::unique_ptr<Region> region_;
  unsigned char* data_ = nullptr;
  uint64_t size_ = 0;
  uint64_t dev_ = 0, ino_ = 0;
  uint32_t uid_ = 0, mode_ = 0;
};

// Creates `spec` with `bytes` reserved (zero-filled) and maps it read-write.
// A file is built as "<name>.new.<pid>" and must be published with
// publish_object(); a POSIX shm name replaces any old object at once.
// Returns 0 or an errno value with a one-line reason.
int create_object(const ObjectSpec& spec, uint64_t bytes, std::unique_ptr<MappedObject>* out, std::string* why);
// Makes a created object visible under its name (rename for files; no-op for shm).
int publish_object(const ObjectSpec& spec, std::string* why);
// Maps an existing object read-write (used to mark an old segment stopped).
// Only this user's regular object, not writable by others: anything else is
// EPERM and never mapped (its owner could truncate it under us: SIGBUS).
int open_object_rw(const ObjectSpec& spec, std::unique_ptr<MappedObject>* out, std::string* why);
// Re-applies mode and group to an existing object and reserves its memory
// (posix_fallocate: a hole punched into it is filled, never a SIGBUS later);
// for a table re-initialised in place. Never changes its size.
int reserve_object(const ObjectSpec& spec, uint64_t bytes, std::string* why);
// Removes the name (readers that mapped it keep their mapping).
void remove_object(const ObjectSpec& spec);

// Squatting: in a shared directory (/dev/shm, /tmp) another user can create
// a name first. True when `name` exists and is not this user's regular
// object, or is writable by others; the reason (naming the owner's uid) in *why.
bool foreign_object(const std::string& name, bool posix_shm, std::string* why);
// `name` plus "." and 16 random hex digits: a name nobody can guess first.
std::string fresh_object_name(const std::string& name);
// The fresh names (fresh_object_name) of `name` that exist and are this
// user's: a previous writer's, to use again rather than leave behind.
std::vector<std::string> own_fallback_names(const std::string& name, bool posix_shm);

// Exclusive lock on "<name>.lock", held for the writer's lifetime, so that a
// second writer on the same segment refuses instead of stealing it.
class ObjectLock {
 public:
  ~ObjectLock();
  // Returns 0, EWOULDBLOCK when another process holds it, EPERM when the
  // lock file is not this user's (or is writable by others: never locked
  // through), or another errno.
  static int acquire(const ObjectSpec& spec, std::unique_ptr<ObjectLock>* out, std::string* why);
  // Removes the lock's name while still holding it (at a clean stop). A
  // writer that locked the old file meanwhile sees it was unlinked and retries.
  void remove();

 private:
  int fd_ = -1;
  std::string name_;
  bool posix_shm_ = false;
};

// Bytes the current cgroup (v2) may still charge before its memory.max, or
// UINT64_MAX when there is no limit or it cannot be read.
uint64_t cgroup_memory_available();

}  // namespace nearcache::shm
