// tests/shm/test_adopt.cc — adopting a table a previous writer left
// (shm/adopt.cc): after a clean stop and after a crash, what is kept reads
// back byte-identical, and what a cut write or corruption leaves is dropped
// with its reason; geometry changes start cold, in place.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <map>
#include <random>
#include <set>

#include "layout.h"
#include "shm_fixture.h"

using namespace nearcache::shm;

namespace {

ReadStatus read(Reader& r, const std::string& k, std::string* v) {
  std::string buf(1 << 17, '\0');
  ReadResult res = r.get(k.data(), k.size(), buf.data(), buf.size());
  if (res.status == ReadStatus::hit) v->assign(buf.data(), res.value_len);
  return res.status;
}

// A read-write mapping of the segment file, to play the crash's or the
// corruption's part while no writer runs.
struct Raw {
  unsigned char* p = nullptr;
  size_t n = 0;
  explicit Raw(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDWR);
    REQUIRE(fd >= 0);
    n = size_t(lseek(fd, 0, SEEK_END));
    p = static_cast<unsigned char*>(mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
    ::close(fd);
    REQUIRE(p != MAP_FAILED);
  }
  ~Raw() { munmap(p, n); }
  Header* h() const { return reinterpret_cast<Header*>(p); }
  WriterState* ws() const { return reinterpret_cast<WriterState*>(p + kWriterStateOffset); }
  Bucket* bucket(uint32_t i) const { return reinterpret_cast<Bucket*>(p + h()->buckets_offset) + i; }
  ItemHeader* item(uint64_t way) const {
    return reinterpret_cast<ItemHeader*>(p + h()->data_offset + way_unit(way) * kItemAlign);
  }
  std::string key_of(uint64_t way) const {
    const ItemHeader* ih = item(way);
    return std::string(reinterpret_cast<const char*>(ih) + kItemHeaderBytes, meta_key_len(ih->meta));
  }
  // The bucket and way holding `key`.
  bool find(const std::string& key, uint32_t* b, uint32_t* w) const {
    for (uint32_t i = 0; i < h()->bucket_count; ++i)
      for (uint32_t j = 0; j < kWaysPerBucket; ++j)
        if (bucket(i)->way[j] != 0 && key_of(bucket(i)->way[j]) == key) return *b = i, *w = j, true;
    return false;
  }
};

std::string value_for(std::mt19937_64& rng, int i) {
  std::string v(size_t(rng() % 600), '\0');
  for (auto& c : v) c = char(rng());
  return v + std::to_string(i);
}

// A writer on `o` that fn(writer) uses, in a child that then dies of SIGKILL
// holding it: no destructor, no stop().
template <class Fn>
void crash_writer(const WriterOptions& o, Fn fn) {
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    auto w = nctest::make_writer(o);
    fn(*w);
    w.release();  // no destructor: it would stop() the table
    kill(getpid(), SIGKILL);
    _exit(0);
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFSIGNALED(status));
}

// Every key of the model reads back identical, or is absent (evicted) where
// allow_absent; returns how many were hits.
size_t check_model(Reader& r, const std::map<std::string, std::string>& model, bool allow_absent) {
  size_t hits = 0;
  for (const auto& [k, want] : model) {
    std::string v;
    const ReadStatus s = read(r, k, &v);
    if (s == ReadStatus::hit) {
      CHECK(v == want);
      hits++;
    } else {
      CHECK(allow_absent);
      CHECK(s == ReadStatus::miss);
    }
  }
  return hits;
}

// Random sets and deletes well past the table's capacity: the adopted logs
// must wrap, evict and reinsert their way through the adopted items. The
// model is the same for the same seed; w == nullptr computes it only.
void churn(Writer* w, Reader* r, std::map<std::string, std::string>& model, int n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  for (int i = 0; i < n; ++i) {
    const std::string k = "churn:" + std::to_string(rng() % 20000);
    if (rng() % 8 == 0) {
      if (w) w->del(k);
      model.erase(k);
    } else {
      const std::string v = value_for(rng, i);
      if (w) REQUIRE(w->set(k, v, 0, 0) == Status::ok);
      model[k] = v;
    }
    if (w && i % 4096 == 0) w->clear_step(64);
  }
  if (r) check_model(*r, model, true);
}

std::map<std::string, std::string> fill(Writer& w, int n, uint64_t seed = 1) {
  std::mt19937_64 rng(seed);
  std::map<std::string, std::string> model;
  for (int i = 0; i < n; ++i) {
    const std::string k = "k:" + std::to_string(i);
    const std::string v = value_for(rng, i);
    REQUIRE(w.set(k, v, uint8_t(i), 0) == Status::ok);
    model[k] = v;
  }
  return model;
}

// A small table's directory and options: what each adopt test starts from
// (TEST_CASE_METHOD gives the body `d` and `o`).
struct SmallTable {
  nctest::TempDir d;
  WriterOptions o = nctest::small_options(d);
};

}  // namespace

TEST_CASE_METHOD(SmallTable, "adopt: a clean stop leaves a table the next writer adopts, readers keep hitting") {
  auto w1 = nctest::make_writer(o);
  CHECK_FALSE(w1->start_report().warm);
  auto model = fill(*w1, 2000);
  REQUIRE(w1->set("ttl", "soon", 0, monotonic_ms() + 600000) == Status::ok);
  REQUIRE(w1->set_negative("neg", 0) == Status::ok);
  const uint64_t entries = w1->stats().entries;
  auto r = nctest::open_reader(o.path);
  const uint64_t g1 = r.generation();
  w1.reset();
  CHECK(r.alive(monotonic_ms()));  // stopped, but readers serve until the heartbeat is stale
  CHECK(check_model(r, model, false) == model.size());

  NC_RESTART(w2, rep, o);
  CHECK(rep.warm);
  CHECK(rep.clean_shutdown);
  CHECK(rep.kept == entries);
  CHECK(rep.dropped_total() == 0);
  CHECK(w2->generation() == g1);
  CHECK(w2->stats().entries == entries);
  CHECK(r.alive(monotonic_ms()));
  CHECK(check_model(r, model, false) == model.size());
  Item it;
  REQUIRE(w2->get("ttl", &it));
  CHECK(it.expiry_ms != 0);
  std::string v;
  CHECK(read(r, "neg", &v) == ReadStatus::negative);
  CHECK(w2->get("k:7", &it));
  CHECK(it.flags == 7);
  churn(w2.get(), &r, model, 60000, 2);
}

TEST_CASE_METHOD(SmallTable, "adopt: after a crash (SIGKILL, no stop) every kept entry is the last value written") {
  crash_writer(o, [](Writer& w) {
    fill(w, 3000);
    std::map<std::string, std::string> m;
    churn(&w, nullptr, m, 30000, 3);  // wraps the logs before the crash
  });
  std::mt19937_64 rng(1);
  std::map<std::string, std::string> model;
  for (int i = 0; i < 3000; ++i) model["k:" + std::to_string(i)] = value_for(rng, i);
  churn(nullptr, nullptr, model, 30000, 3);

  NC_RESTART(w, rep, o);
  CHECK(rep.warm);
  CHECK_FALSE(rep.clean_shutdown);
  CHECK(rep.kept > 1000);
  CHECK(rep.dropped_total() == 0);
  size_t seen = 0;
  w->for_each([&](const Item& it) {
    auto m = model.find(std::string(it.key));
    REQUIRE(m != model.end());
    CHECK(m->second == it.value);
    seen++;
  });
  CHECK(seen == rep.kept);
  auto r = nctest::open_reader(o.path);
  churn(w.get(), &r, model, 60000, 4);
}

TEST_CASE_METHOD(SmallTable, "adopt: a bucket cut mid-write loses its entries and its version moves on to even") {
  auto model = fill(*nctest::make_writer(o), 1500);
  uint32_t b = 0, w = 0, v0 = 0;
  size_t in_bucket = 0;
  {
    Raw raw(o.path);
    REQUIRE(raw.find("k:42", &b, &w));
    v0 = raw.bucket(b)->version;
    raw.bucket(b)->version = v0 + 1;  // odd: the writer died inside its seqlock
    for (uint32_t j = 0; j < kWaysPerBucket; ++j) in_bucket += raw.bucket(b)->way[j] != 0;
  }
  NC_RESTART(w2, rep, o);
  CHECK(rep.odd_buckets == 1);
  CHECK(rep.dropped[size_t(Drop::odd_bucket)] == in_bucket);
  CHECK(rep.kept == model.size() - in_bucket);
  Raw raw(o.path);
  CHECK(raw.bucket(b)->version == v0 + 2);
  auto r = nctest::open_reader(o.path);
  std::string v;
  CHECK(read(r, "k:42", &v) == ReadStatus::miss);
  CHECK(check_model(r, model, true) == model.size() - in_bucket);
}

TEST_CASE_METHOD(SmallTable, "adopt: a corrupt way or item header is dropped, the rest kept, the logs stay walkable") {
  auto model = fill(*nctest::make_writer(o), 1500);
  {
    Raw raw(o.path);
    uint32_t b[4], w[4];
    for (int i = 0; i < 4; ++i) REQUIRE(raw.find("k:" + std::to_string(i + 1), &b[i], &w[i]));
    ItemHeader* ih = raw.item(raw.bucket(b[0])->way[w[0]]);
    ih->meta = make_meta(meta_value_len(ih->meta), 60000, 0, ItemState::live);  // key longer than key_limit
    raw.item(raw.bucket(b[1])->way[w[1]])->meta = make_meta(3, 3, 0, ItemState::dead);  // a way to a dead item
    raw.bucket(b[2])->way[w[2]] = make_way(0, raw.h()->data_bytes / kItemAlign + 5);  // past the data area
    raw.bucket(b[3])->way[w[3]] ^= uint64_t{1} << 60;                                  // wrong tag
  }
  NC_RESTART(w2, rep, o);
  CHECK(rep.dropped[size_t(Drop::bad_item)] == 2);
  CHECK(rep.dropped[size_t(Drop::bad_way)] == 2);
  CHECK(rep.kept == model.size() - 4);
  auto r = nctest::open_reader(o.path);
  for (const char* k : {"k:1", "k:2", "k:3", "k:4"}) {
    std::string v;
    CHECK(read(r, k, &v) == ReadStatus::miss);
    model.erase(k);
  }
  CHECK(check_model(r, model, false) == model.size());
  churn(w2.get(), &r, model, 60000, 5);
}

TEST_CASE_METHOD(SmallTable, "adopt: ring fields behind the truth, or unreadable, are rebuilt from the items") {
  std::map<std::string, std::string> model;
  {
    auto w = nctest::make_writer(o);
    auto r = nctest::open_reader(o.path);
    churn(w.get(), &r, model, 40000, 6);  // both logs wrapped
  }
  uint64_t entries = 0;
  {
    auto r = nctest::open_reader(o.path);
    entries = check_model(r, model, true);
  }
  bool garbage = false;
  SECTION("fields of a much older moment (a fresh table's)") {
    Raw raw(o.path);
    const uint64_t small_end = (raw.h()->data_bytes * o.small_queue_percent / 100 + 7) / 8 * 8;
    raw.ws()->small = {0, 0, 0};
    raw.ws()->main = {small_end, small_end, 0};
  }
  SECTION("unreadable fields") {
    Raw raw(o.path);
    raw.ws()->small = {3, 1ull << 60, 1ull << 62};
    raw.ws()->main = {5, 7, 9};
    garbage = true;
  }
  NC_RESTART(w, rep, o);
  CHECK(rep.warm);
  CHECK(rep.kept == entries);
  CHECK(rep.dropped_total() == 0);
  CHECK(rep.ring_rebuilt == garbage);
  auto r = nctest::open_reader(o.path);
  CHECK(check_model(r, model, true) == entries);
  churn(w.get(), &r, model, 80000, 7);
  const WriterStats st = w->stats();
  CHECK(st.small_used <= st.data_bytes);
  CHECK(st.main_used <= st.data_bytes);
}

TEST_CASE_METHOD(SmallTable, "adopt: a CLEAR in progress at the crash is finished") {
  crash_writer(o, [](Writer& w) {
    fill(w, 2000);
    for (int i = 0; i < 500; ++i) w.set("p:" + std::to_string(i), "x", 0, 0);
    w.clear_begin("p:");
    w.clear_step(5);  // a few buckets only
  });
  NC_RESTART(w, rep, o);
  CHECK(rep.warm);
  CHECK(rep.kept == 2000);
  CHECK(rep.dropped[size_t(Drop::cleared)] > 400);
  size_t left = 0;
  w->for_each([&](const Item& it) { left += it.key.starts_with("p:"); });
  CHECK(left == 0);
}

TEST_CASE_METHOD(SmallTable, "adopt: a changed geometry starts cold in place, old readers stop, versions only grow") {
  auto w1 = nctest::make_writer(o);
  fill(*w1, 500);
  auto r1 = nctest::open_reader(o.path);
  const uint64_t g1 = r1.generation();
  w1.reset();
  uint32_t v0;
  ino_t ino0;
  {
    Raw raw(o.path);
    v0 = raw.bucket(0)->version;
    struct stat st;
    stat(o.path.c_str(), &st);
    ino0 = st.st_ino;
  }
  std::string why_needle;
  SECTION("expected_item_size") {
    o.expected_item_bytes = 512;
    why_needle = "bucket count";
  }
  SECTION("value_limit") {
    o.value_limit = 32 << 10;
    why_needle = "value_limit";
  }
  SECTION("warm_restart off") {
    o.warm_restart = false;
    why_needle = "warm_restart is off";
  }
  SECTION("an unreadable header") {
    Raw raw(o.path);
    raw.h()->magic = 0;
    why_needle = "unreadable";
  }
  NC_RESTART(w2, rep, o);
  CHECK_FALSE(rep.warm);
  CHECK(rep.reason.find(why_needle) != std::string::npos);
  CHECK(rep.reused_in_place);
  CHECK(w2->generation() > g1);
  CHECK(w2->stats().entries == 0);
  CHECK_FALSE(r1.alive(monotonic_ms()));  // another generation in the same object
  std::string v;
  CHECK(read(r1, "k:1", &v) == ReadStatus::unavailable);
  struct stat st;
  stat(o.path.c_str(), &st);
  CHECK(st.st_ino == ino0);  // the same object: room for one segment is enough
  {
    Raw raw(o.path);
    if (why_needle != "unreadable") CHECK(raw.bucket(0)->version > v0);
    CHECK(raw.bucket(0)->version % 2 == 0);
  }
  auto r2 = nctest::open_reader(o.path);
  REQUIRE(w2->set("k:1", "new", 0, 0) == Status::ok);
  CHECK(read(r2, "k:1", &v) == ReadStatus::hit);
  CHECK(v == "new");
}

TEST_CASE_METHOD(SmallTable, "adopt: a changed segment_size makes a new object, the old one stopped") {
  auto w1 = nctest::make_writer(o);
  fill(*w1, 100);
  auto r1 = nctest::open_reader(o.path);
  w1.reset();
  o.segment_bytes = 8 << 20;
  auto w2 = nctest::make_writer(o);
  INFO(w2->start_report().summary());
  CHECK_FALSE(w2->start_report().warm);
  CHECK(w2->start_report().reason.find("segment size changed") != std::string::npos);
  CHECK_FALSE(w2->start_report().reused_in_place);
  CHECK_FALSE(r1.alive(monotonic_ms()));
}

TEST_CASE_METHOD(SmallTable, "adopt: with a Redis tier nothing adopted is kept, unsynced entries counted apart") {
  o.redis_tier = true;
  {
    auto w1 = nctest::make_writer(o);
    fill(*w1, 300);
  }
  NC_RESTART(w2, rep, o);
  CHECK(rep.warm);
  CHECK(rep.kept == 0);
  CHECK(rep.dropped[size_t(Drop::unsynced)] == 300);
  CHECK(w2->stats().entries == 0);
  auto r = nctest::open_reader(o.path);
  std::string v;
  CHECK(read(r, "k:1", &v) == ReadStatus::miss);
}

TEST_CASE_METHOD(SmallTable,
                 "adopt: an item marked synced by its id is kept, one replaced after its id was taken is not") {
  o.redis_tier = true;
  uint64_t generation = 0;
  {
    auto w1 = nctest::make_writer(o);
    generation = w1->generation();
    REQUIRE(w1->set("acked", "v1", 0, 0) == Status::ok);
    const uint64_t acked = w1->item_id("acked");
    REQUIRE(w1->set("replaced", "old", 0, 0) == Status::ok);
    const uint64_t old_id = w1->item_id("replaced");
    REQUIRE(w1->set("replaced", "new", 0, 0) == Status::ok);  // a newer local write, not acknowledged yet
    REQUIRE(w1->set("queued", "q", 0, 0) == Status::ok);      // never acknowledged
    CHECK(acked != 0);
    CHECK(w1->item_id("absent") == 0);
    CHECK(w1->mark_synced("acked", acked));
    CHECK_FALSE(w1->mark_synced("replaced", old_id));  // the old write's acknowledgement
    CHECK_FALSE(w1->mark_synced("queued", 0));
  }
  o.redis_snapshot_generation = generation;  // the daemon's counter snapshot belongs to this table
  NC_RESTART(w2, rep, o);
  CHECK(rep.warm);
  CHECK(rep.kept == 1);
  CHECK(rep.dropped[size_t(Drop::unsynced)] == 2);
  Item it;
  CHECK(w2->get("acked", &it));
  CHECK(it.value == "v1");
  CHECK_FALSE(w2->contains("replaced"));
  CHECK_FALSE(w2->contains("queued"));
}

TEST_CASE("item_id: every write of a key gets its own id, also when a later lap puts it at the same offset") {
  nctest::TempDir d;
  auto w = nctest::make_writer(nctest::small_options(d, 1 << 20));
  std::set<uint64_t> seen;
  uint64_t prev = 0;
  const uint64_t wraps0 = w->stats().wraps;
  for (int i = 0; i < 20000; ++i) {
    REQUIRE(w->set("k", std::string(200, char('a' + i % 26)), 0, 0) == Status::ok);
    const uint64_t id = w->item_id("k");
    REQUIRE(id != 0);
    REQUIRE(seen.insert(id).second);  // never the id of an earlier write
    if (prev) REQUIRE_FALSE(w->mark_synced("k", prev));
    prev = id;
    // Other keys in between, so that the logs evict, move and wrap.
    REQUIRE(w->set("o" + std::to_string(i % 3000), std::string(150, 'x'), 0, 0) == Status::ok);
    REQUIRE(w->item_id("k") == id);  // stable while the item stays where it is
  }
  CHECK(w->stats().wraps - wraps0 >= 20);  // the offsets really were reused
  CHECK(w->mark_synced("k", prev));
}
