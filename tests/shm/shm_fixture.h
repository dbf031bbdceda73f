// tests/shm/shm_fixture.h — a table in a private temporary directory,
// removed with everything in it when the fixture goes out of scope.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "hits.h"
#include "reader.h"
#include "writer.h"

namespace nctest {

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "nearcache-test-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline nearcache::shm::WriterOptions small_options(const TempDir& d, uint64_t bytes = 4 << 20) {
  nearcache::shm::WriterOptions o;
  o.path = d.file("segment");
  o.segment_bytes = bytes;
  o.key_limit = 250;
  o.value_limit = 64 << 10;
  o.expected_item_bytes = 128;
  // No heartbeat timer runs here: a slow (sanitizer, loaded) run must not
  // look like a dead writer. Tests of staleness move a fake clock past it.
  o.heartbeat_grace_ms = 600000;
  return o;
}

inline std::unique_ptr<nearcache::shm::Writer> make_writer(const nearcache::shm::WriterOptions& o) {
  std::string why;
  auto w = nearcache::shm::Writer::create(o, &why);
  if (!w) throw std::runtime_error("Writer::create: " + why);
  return w;
}

// A writer started on `o` (what a restarted daemon does) as `w`, its start
// report as `rep`, which every failed check of the scope then shows.
#define NC_RESTART(w, rep, o)                                   \
  auto w = nctest::make_writer(o);                             \
  const nearcache::shm::StartReport& rep = w->start_report(); \
  INFO(rep.summary())

// A reader process's hit region and the daemon's side of it, in one process:
// lookups of the attached Reader are recorded, deliver() does what the
// daemon's timer does (Engine::poll_hits) for this one region.
struct Hits {
  std::unique_ptr<nearcache::shm::HitRegion> region;
  std::unique_ptr<nearcache::shm::HitSource> source;
  uint64_t clock_ms = 1;  // advanced per deliver, so that the counters' plausibility bound never bites here

  explicit Hits(nearcache::shm::Reader* r = nullptr) {
    std::string why;
    region = nearcache::shm::HitRegion::create(&why);
    if (!region) throw std::runtime_error(why);
    if (nearcache::shm::HitSource::adopt(dup(region->fd()), clock_ms, &source, &why) != 0)
      throw std::runtime_error("HitSource::adopt: " + why);
    if (r) r->attach_hits(region.get());
  }
  void deliver(nearcache::shm::Writer& w) {
    nearcache::shm::HitDeltas d;
    std::vector<uint32_t> ways;
    clock_ms += 1000;
    if (!source->poll(w.generation(), w.way_index_limit(), clock_ms, &ways, &d))
      throw std::runtime_error("HitSource::poll failed");
    w.note_hits(ways.data(), ways.size());
    w.note_reader_counts(d.hits, d.misses, d.busy, d.local_misses);
  }
};

inline nearcache::shm::Reader open_reader(const std::string& path) {
  nearcache::shm::Reader r;
  std::string why;
  if (r.open(path, &why) != 0) throw std::runtime_error("Reader::open: " + why);
  return r;
}

// A writer on a small segment and a reader of it, in this process.
struct Table {
  TempDir dir;
  std::unique_ptr<nearcache::shm::Writer> w;
  nearcache::shm::Reader r;
  explicit Table(uint64_t bytes = 4 << 20) {
    w = make_writer(small_options(dir, bytes));
    r = open_reader(w->path());
  }
};

// A read-write mapping of a segment file while no writer runs, to play a
// crash's or a corruption's part (a bucket cut mid-write, a CLEAR record).
struct RawSegment {
  unsigned char* p = nullptr;
  size_t n = 0;
  explicit RawSegment(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDWR);
    if (fd < 0) throw std::runtime_error("open " + path);
    n = size_t(lseek(fd, 0, SEEK_END));
    void* m = mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ::close(fd);
    if (m == MAP_FAILED) throw std::runtime_error("mmap " + path);
    p = static_cast<unsigned char*>(m);
  }
  ~RawSegment() { munmap(p, n); }
  RawSegment(const RawSegment&) = delete;
  RawSegment& operator=(const RawSegment&) = delete;
  nearcache::shm::Header* h() const { return reinterpret_cast<nearcache::shm::Header*>(p); }
  nearcache::shm::WriterState* ws() const {
    return reinterpret_cast<nearcache::shm::WriterState*>(p + nearcache::shm::kWriterStateOffset);
  }
  nearcache::shm::Bucket* bucket(uint32_t i) const {
    return reinterpret_cast<nearcache::shm::Bucket*>(p + h()->buckets_offset) + i;
  }
};

// Reads a key through a Reader into a string; "" with status otherwise.
inline nearcache::shm::ReadStatus read(nearcache::shm::Reader& r, const std::string& key, std::string* value,
                                       uint64_t now = 0) {
  std::string buf(1 << 20, '\0');
  auto res = now ? r.get_at(key.data(), key.size(), buf.data(), buf.size(), now)
                 : r.get(key.data(), key.size(), buf.data(), buf.size());
  if (res.status == nearcache::shm::ReadStatus::hit) value->assign(buf.data(), res.value_len);
  return res.status;
}

}  // namespace nctest
