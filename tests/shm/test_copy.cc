// tests/shm/test_copy.cc — a segment_size change copies the old table's entries
// into the new one (shm/copy.cc): values, flags, TTLs and the Redis state bits
// carry over, what adoption would drop is dropped with its reason, the hottest
// are kept when not all fit, and the old table's readers stop (they re-open).
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <map>
#include <string>

#include "layout.h"
#include "shm_fixture.h"

using namespace nearcache::shm;
using nctest::read;

namespace {

ino_t inode(const std::string& path) {
  struct stat st;
  REQUIRE(stat(path.c_str(), &st) == 0);
  return st.st_ino;
}

std::string value_of(int i) { return "value " + std::to_string(i) + ":" + std::string(size_t(i % 300), 'x'); }

}  // namespace

TEST_CASE("copy: a bigger segment_size keeps every live entry, its flags and TTL, and old readers stop") {
  nctest::TempDir d;
  auto o = nctest::small_options(d);
  auto w1 = nctest::make_writer(o);
  const uint64_t t0 = monotonic_ms();
  std::map<std::string, std::string> model;
  for (int i = 0; i < 2000; ++i) {
    const std::string k = "k:" + std::to_string(i);
    REQUIRE(w1->set(k, value_of(i), uint8_t(i), i % 3 ? 0 : t0 + 600000 + uint64_t(i)) == Status::ok);
    model[k] = value_of(i);
  }
  const uint64_t soon = monotonic_ms() + 30;
  REQUIRE(w1->set("soon", "gone", 0, soon) == Status::ok);
  REQUIRE(w1->contains("soon"));
  REQUIRE(w1->del("k:7") == Status::ok);
  model.erase("k:7");
  auto r1 = nctest::open_reader(o.path);
  const uint64_t g1 = r1.generation();
  const ino_t ino1 = inode(o.path);
  w1.reset();  // a clean stop, warm_restart on: the table stays for the next writer
  while (monotonic_ms() <= soon) usleep(1000);  // "soon" expires meanwhile

  o.segment_bytes = 8 << 20;
  NC_RESTART(w2, rep, o);
  CHECK_FALSE(rep.warm);
  CHECK(rep.copied);
  CHECK(rep.reason.find("segment size changed") != std::string::npos);
  CHECK(rep.summary().find("copied into it: 1999 entries kept, 1 dropped (expired 1)") != std::string::npos);
  CHECK(rep.kept == model.size());
  CHECK(rep.dropped_total() == 1);
  CHECK(w2->stats().entries == model.size());
  CHECK(w2->stats().evictions == 0);
  CHECK(w2->generation() > g1);
  CHECK(inode(o.path) != ino1);  // a new object, renamed over the old name
  CHECK_FALSE(r1.alive(monotonic_ms()));  // the old table is stopped: its readers re-open by name

  auto r2 = nctest::open_reader(o.path);
  CHECK(r2.generation() == w2->generation());
  CHECK(r2.mapped_bytes() == 8u << 20);
  for (const auto& [k, want] : model) {
    std::string buf(4096, '\0');
    const ReadResult res = r2.get(k.data(), k.size(), buf.data(), buf.size());
    REQUIRE(res.status == ReadStatus::hit);
    CHECK(std::string(buf.data(), res.value_len) == want);
    const int i = std::stoi(k.substr(2));
    CHECK(res.flags == uint8_t(i));
    CHECK(res.expiry_ms == (i % 3 ? 0 : t0 + 600000 + uint64_t(i)));
  }
  CHECK_FALSE(w2->contains("k:7"));
  CHECK_FALSE(w2->contains("soon"));
  // The copied table is an ordinary one: it takes sets, evicts and wraps.
  for (int i = 0; i < 60000; ++i) REQUIRE(w2->set("n:" + std::to_string(i), value_of(i), 0, 0) == Status::ok);
  CHECK(w2->stats().wraps > 0);
}

TEST_CASE("copy: into a smaller table the main queue's newest entries are kept first, the rest dropped as no_room") {
  nctest::TempDir d;
  auto o = nctest::small_options(d);
  o.expected_item_bytes = 256;
  auto w1 = nctest::make_writer(o);
  const std::string v(200, 'c');
  // Cold keys first, until they have filled main (moved there from small while it had room).
  int n = 0;
  while (w1->stats().main_used + 4096 < w1->stats().data_bytes * 9 / 10)
    REQUIRE(w1->set("cold:" + std::to_string(n++), v, 0, 0) == Status::ok);
  // Hot keys, read while in small: moved to main when small's tail reaches
  // them, at main's head (main evicts its oldest cold ones for them).
  for (int i = 0; i < 300; ++i) REQUIRE(w1->set("hot:" + std::to_string(i), v, 0, 0) == Status::ok);
  Item it;
  for (int i = 0; i < 300; ++i) REQUIRE(w1->get("hot:" + std::to_string(i), &it));
  const uint64_t moved0 = w1->stats().moved_to_main;
  for (int i = 0; i < 4000; ++i) REQUIRE(w1->set("late:" + std::to_string(i), v, 0, 0) == Status::ok);
  REQUIRE(w1->stats().moved_to_main - moved0 >= 300);
  const uint64_t live = w1->stats().entries;
  w1.reset();

  o.segment_bytes = 1 << 20;
  NC_RESTART(w2, rep, o);
  CHECK(rep.copied);
  CHECK(rep.kept > 1000);
  CHECK(rep.dropped[size_t(Drop::no_room)] > 0);
  CHECK(rep.kept + rep.dropped[size_t(Drop::no_room)] == live);
  CHECK(rep.kept == w2->stats().entries);
  CHECK(w2->stats().item_bytes <= w2->stats().data_bytes);
  // Every hot key is kept (the newest of main); the oldest cold ones are not.
  for (int i = 0; i < 300; ++i) CHECK(w2->contains("hot:" + std::to_string(i)));
  CHECK_FALSE(w2->contains("cold:0"));
  // The newest of small are kept too, within the new small queue's share.
  CHECK(w2->contains("late:3999"));
  CHECK_FALSE(w2->contains("late:2500"));
  auto r = nctest::open_reader(o.path);
  std::string got;
  CHECK(read(r, "hot:0", &got) == ReadStatus::hit);
  CHECK(got == v);
}

TEST_CASE("copy: what adoption would drop is dropped with its reason, and the new limits drop what exceeds them") {
  nctest::TempDir d;
  auto o = nctest::small_options(d);
  std::map<std::string, std::string> model;
  {
    auto w1 = nctest::make_writer(o);
    for (int i = 0; i < 3000; ++i) {
      REQUIRE(w1->set("k:" + std::to_string(i), value_of(i), 0, 0) == Status::ok);
      model["k:" + std::to_string(i)] = value_of(i);
    }
    for (int i = 0; i < 20; ++i) REQUIRE(w1->set("big:" + std::to_string(i), std::string(20000, 'b'), 0, 0) == Status::ok);
    for (int i = 0; i < 50; ++i) REQUIRE(w1->set("gone:" + std::to_string(i), "g", 0, 0) == Status::ok);
  }
  uint64_t cut_entries = 0;
  {
    nctest::RawSegment raw(o.path);
    // A bucket cut mid-write (odd version): its entries cannot be trusted.
    for (uint32_t b = 0; b < raw.h()->bucket_count && !cut_entries; ++b) {
      for (uint32_t w = 0; w < kWaysPerBucket; ++w) cut_entries += raw.bucket(b)->way[w] != 0;
      if (cut_entries) raw.bucket(b)->version |= 1;
    }
    // A way pointing outside the data area.
    for (uint32_t b = raw.h()->bucket_count - 1; b > 0; --b)
      if (raw.bucket(b)->way[0] != 0 && !(raw.bucket(b)->version & 1)) {
        raw.bucket(b)->way[0] = make_way(way_tag(raw.bucket(b)->way[0]), raw.h()->data_bytes / kItemAlign + 5);
        break;
      }
    // A second way to the same item (what a cut move leaves): one copy only.
    for (uint32_t b = raw.h()->bucket_count / 2; b < raw.h()->bucket_count; ++b)
      if (raw.bucket(b)->way[0] != 0 && raw.bucket(b)->way[kWaysPerBucket - 1] == 0) {
        raw.bucket(b)->way[kWaysPerBucket - 1] = raw.bucket(b)->way[0];
        break;
      }
    // A CLEAR of "gone:" in progress from bucket 0 on.
    const std::string prefix = "gone:";
    std::memcpy(raw.ws()->clear_prefix, prefix.data(), prefix.size());
    raw.ws()->clear_prefix_len = uint32_t(prefix.size());
    raw.ws()->clear_cursor = 0;
    raw.ws()->clear_epoch = raw.h()->epoch;
    raw.ws()->clear_id = 1;
  }
  o.segment_bytes = 6 << 20;
  o.value_limit = 16 << 10;  // the "big:" values no longer fit
  NC_RESTART(w2, rep, o);
  CHECK(rep.copied);
  CHECK(rep.odd_buckets == 1);
  CHECK(rep.dropped[size_t(Drop::odd_bucket)] == cut_entries);
  CHECK(rep.dropped[size_t(Drop::bad_way)] == 1);
  CHECK(rep.dropped[size_t(Drop::too_large)] > 0);  // all 20 but those in the two damaged buckets
  CHECK(rep.dropped[size_t(Drop::cleared)] > 0);
  CHECK(rep.dropped[size_t(Drop::no_room)] == 0);
  CHECK(rep.dropped[size_t(Drop::duplicate)] == 1);
  CHECK(rep.kept + rep.dropped_total() == 3071);  // the entries and the duplicate way
  for (int i = 0; i < 20; ++i) CHECK_FALSE(w2->contains("big:" + std::to_string(i)));
  for (int i = 0; i < 50; ++i) CHECK_FALSE(w2->contains("gone:" + std::to_string(i)));
  size_t present = 0;
  for (const auto& [k, want] : model) {
    Item it;
    if (!w2->get(k, &it)) continue;
    CHECK(it.value == want);
    present++;
  }
  CHECK(present == rep.kept);
}

TEST_CASE("copy: with a Redis tier only synced, reconciled entries are copied, the synced bit kept, the table suspended") {
  nctest::TempDir d;
  auto o = nctest::small_options(d);
  o.redis_tier = true;
  uint64_t g1 = 0;
  {
    auto w1 = nctest::make_writer(o);
    g1 = w1->generation();
    for (int i = 0; i < 100; ++i) {
      REQUIRE(w1->set("s:" + std::to_string(i), "synced", 0, 0) == Status::ok);
      w1->mark_synced("s:" + std::to_string(i));
      REQUIRE(w1->set("q:" + std::to_string(i), "queued", 0, 0) == Status::ok);
    }
    REQUIRE(w1->set_negative("neg", 0) == Status::ok);
    w1->mark_synced("neg");
  }
  SECTION("without a snapshot of the old table nothing from Redis is kept") {
    o.segment_bytes = 8 << 20;
    NC_RESTART(w2, rep, o);
    CHECK(rep.copied);
    CHECK(rep.kept == 0);
    CHECK(rep.dropped[size_t(Drop::unsynced)] == 100);
    CHECK(rep.dropped[size_t(Drop::unreconciled)] == 101);
    CHECK_FALSE(w2->flags() & kFlagSuspended);  // nothing to serve, nothing to repair
  }
  SECTION("with one, the synced entries are copied and wait for the repair") {
    o.segment_bytes = 8 << 20;
    o.redis_snapshot_generation = g1;
    uint64_t g2 = 0;
    {
      NC_RESTART(w2, rep, o);
      CHECK(rep.copied);
      CHECK(rep.kept == 101);
      CHECK(rep.dropped[size_t(Drop::unsynced)] == 100);
      CHECK(w2->flags() & kFlagSuspended);
      CHECK_FALSE(w2->flags() & kFlagAuthoritative);
      CHECK(w2->negative("neg"));
      Item it;
      CHECK(w2->get("s:5", &it));
      CHECK_FALSE(w2->contains("q:5"));
      auto r = nctest::open_reader(o.path);
      std::string v;
      CHECK(read(r, "s:5", &v) == ReadStatus::suspended);
      g2 = w2->generation();
    }
    // The synced bit came along: adopting the copy (same size now) keeps them.
    o.redis_snapshot_generation = g2;
    auto w3 = nctest::make_writer(o);
    INFO(w3->start_report().summary());
    CHECK(w3->start_report().warm);
    CHECK(w3->start_report().kept == 101);
  }
  SECTION("serving adopted entries until the repair: not suspended") {
    o.segment_bytes = 8 << 20;
    o.redis_snapshot_generation = g1;
    o.redis_serve_adopted = true;
    auto w2 = nctest::make_writer(o);
    CHECK(w2->start_report().kept == 101);
    CHECK_FALSE(w2->flags() & kFlagSuspended);
  }
}

TEST_CASE("copy: warm_restart off starts empty, as before") {
  nctest::TempDir d;
  auto o = nctest::small_options(d);
  {
    auto w1 = nctest::make_writer(o);
    for (int i = 0; i < 100; ++i) REQUIRE(w1->set("k:" + std::to_string(i), "v", 0, 0) == Status::ok);
  }
  o.segment_bytes = 8 << 20;
  o.warm_restart = false;
  auto w2 = nctest::make_writer(o);
  INFO(w2->start_report().summary());
  CHECK_FALSE(w2->start_report().copied);
  CHECK(w2->start_report().reason.find("warm_restart is off") != std::string::npos);
  CHECK(w2->stats().entries == 0);
}

TEST_CASE("copy: a POSIX shared-memory segment is copied too (the name is replaced at creation)") {
  nctest::TempDir d;
  auto o = nctest::small_options(d);
  o.posix_shm = true;
  o.path = "/nctest-copy-" + std::to_string(getpid());
  {
    auto w1 = nctest::make_writer(o);
    for (int i = 0; i < 500; ++i) REQUIRE(w1->set("k:" + std::to_string(i), value_of(i), 0, 0) == Status::ok);
  }
  o.segment_bytes = 8 << 20;
  auto w2 = nctest::make_writer(o);
  INFO(w2->start_report().summary());
  CHECK(w2->start_report().copied);
  CHECK(w2->start_report().kept == 500);
  Reader r;
  std::string why;
  ReaderOptions ro;
  ro.posix_shm = true;
  REQUIRE(r.open(o.path, &why, ro) == 0);
  CHECK(r.mapped_bytes() == 8u << 20);
  std::string v;
  CHECK(read(r, "k:42", &v) == ReadStatus::hit);
  CHECK(v == value_of(42));
  w2->remove();
}
