// tests/shm/test_s3fifo.cc — the eviction policy (shm/s3fifo.cc) on its own,
// in the manner of CacheLib's shared policy tests (MMTypeTest): each case
// drives the real Writer on a real segment through one rule of S3-FIFO and
// checks its counter and its effect. Accesses are real reader hits, recorded
// in a hit region and delivered to the writer as the daemon's timer does
// (it bumps the way's frequency); `contains` asks the writer without
// counting an access.
#include <algorithm>
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "layout.h"
#include "shm_fixture.h"

using namespace nearcache::shm;

namespace {

const std::string kValue(200, 'v');  // with the key and header: 224-byte items

struct Policy {
  nctest::TempDir dir;
  std::unique_ptr<Writer> w;
  Reader r;
  nctest::Hits hits;
  uint64_t small_bytes = 0;  // the small queue's share of the data area
  int next = 0;              // scan keys handed out so far

  explicit Policy(uint32_t small_percent = 10, uint32_t value_limit = 64 << 10, bool redis_tier = false) {
    auto o = nctest::small_options(dir);
    o.small_queue_percent = small_percent;
    o.value_limit = value_limit;
    o.redis_tier = redis_tier;
    w = nctest::make_writer(o);
    r = nctest::open_reader(w->path());
    r.attach_hits(hits.region.get());
    small_bytes = (w->stats().data_bytes * small_percent / 100 + 7) / 8 * 8;  // as the writer rounds it
  }
  // Items of kValue that fill the small queue.
  int small_items() const { return int(small_bytes / item_bytes(7, kValue.size())); }

  // A reader hit: the access S3-FIFO counts.
  void access(const std::string& k) {
    std::string v;
    REQUIRE(nctest::read(r, k, &v) == ReadStatus::hit);
    hits.deliver(*w);
  }
  bool has(const std::string& k) { return w->contains(k); }
  void set(const std::string& k) { REQUIRE(w->set(k, kValue, 0, 0) == Status::ok); }

  // Sets n new keys nobody reads (one-hit wonders); returns them.
  std::vector<std::string> scan(int n) {
    std::vector<std::string> keys;
    for (int i = 0; i < n; ++i) {
      char k[8];
      snprintf(k, sizeof k, "s%06d", next++);
      set(k);
      keys.push_back(k);
    }
    return keys;
  }
  // Sets unread keys until the main queue is full: the small queue's tail
  // then starts to be evicted instead of moved.
  std::vector<std::string> fill() {
    std::vector<std::string> keys;
    while (w->stats().evictions == 0) {
      auto k = scan(1);
      keys.push_back(k[0]);
      REQUIRE(next < 100000);
    }
    return keys;
  }
};

}  // namespace

TEST_CASE("s3fifo: the data area splits into the small queue's share and main") {
  for (const uint32_t percent : {10u, 25u}) {
    Policy p(percent);
    const uint64_t small = p.small_bytes;
    const uint64_t item = item_bytes(7, kValue.size());
    p.fill();
    p.scan(3 * p.small_items());
    const auto s = p.w->stats();
    INFO("percent " << percent << ", small used " << s.small_used << " of " << small << ", main used "
                    << s.main_used << " of " << s.data_bytes - small);
    // Each queue is full to within one item of its own size, never beyond it.
    CHECK(s.small_used <= small);
    CHECK(s.small_used + item > small);
    CHECK(s.main_used <= s.data_bytes - small);
    CHECK(s.main_used + item > s.data_bytes - small);
  }
}

TEST_CASE("s3fifo: new keys nobody reads are evicted from small and leave main alone") {
  Policy p;
  const auto resident = p.fill();
  const auto s0 = p.w->stats();
  REQUIRE(s0.moved_to_main > 0);  // while main had room, small's tail moved there
  const auto scanned = p.scan(4 * p.small_items());
  const auto s = p.w->stats();
  // Each scan key entered small and left it unread: evicted, not moved.
  CHECK(s.evictions - s0.evictions >= scanned.size() - size_t(p.small_items()));
  CHECK(s.moved_to_main - s0.moved_to_main <= 2);  // at most where main's wrap freed a gap
  // So the keys main held before the scan are still there, all but those few.
  size_t kept = 0;
  for (const auto& k : resident) kept += p.has(k);
  INFO("resident " << resident.size() << ", kept " << kept);
  CHECK(kept + size_t(p.small_items()) + 4 >= resident.size());
  CHECK_FALSE(p.has(scanned.front()));
  CHECK(p.has(scanned.back()));
}

TEST_CASE("s3fifo: a key evicted from small and set again soon goes to main (ghost hit)") {
  Policy p;
  p.fill();
  const auto first = p.scan(3 * p.small_items());
  // Small is FIFO: the scan's oldest keys are gone, its newest are present.
  size_t gone = 0;
  while (gone < first.size() && !p.has(first[gone])) ++gone;
  REQUIRE(gone > 0);
  REQUIRE(gone < first.size());
  const std::string ghost = first[gone - 1];  // the latest evicted: its fingerprint is fresh

  const uint64_t hits0 = p.w->stats().ghost_hits;
  p.set(ghost);
  CHECK(p.w->stats().ghost_hits == hits0 + 1);
  p.set("never-seen");
  CHECK(p.w->stats().ghost_hits == hits0 + 1);  // a new key is no ghost
  p.set(ghost);
  CHECK(p.w->stats().ghost_hits == hits0 + 1);  // replacing a present key is no ghost hit either

  // In main, it outlives a scan that flushes the small queue twice over; the
  // new key, admitted to small, does not.
  p.scan(2 * p.small_items());
  CHECK(p.has(ghost));
  CHECK_FALSE(p.has("never-seen"));
}

TEST_CASE("s3fifo: a ghost entry counts only until as many evictions as entries have followed it") {
  Policy p;
  p.fill();
  const auto first = p.scan(3 * p.small_items());
  REQUIRE_FALSE(p.has(first.front()));
  const uint64_t entries = p.w->stats().entries;
  p.scan(int(entries) + 2 * p.small_items());  // more than `entries` ghost insertions since
  const uint64_t hits0 = p.w->stats().ghost_hits;
  p.set(first.front());
  CHECK(p.w->stats().ghost_hits == hits0);
}

TEST_CASE("s3fifo: a key read while in small moves to main when small's tail reaches it") {
  Policy p;
  p.fill();
  p.scan(p.small_items());
  const uint64_t moved0 = p.w->stats().moved_to_main;
  p.set("read");
  p.set("unread");
  p.access("read");
  // Push both through small's tail.
  const auto after = p.scan(2 * p.small_items());
  const auto s = p.w->stats();
  CHECK(s.moved_to_main >= moved0 + 1);
  CHECK(s.moved_to_main <= moved0 + 3);  // "read", and at most where main's wrap freed a gap
  CHECK(p.has("read"));
  CHECK_FALSE(p.has("unread"));
  // Moved with its frequency reset: in main it outlives further scans of
  // small, as any main item does while nothing is allocated in main.
  p.scan(2 * p.small_items());
  CHECK(p.has("read"));
}

TEST_CASE("s3fifo: a main item that was read is re-inserted with one access less, then evicted") {
  Policy p;
  // "hot" and the keys after it pass through small into main, which has room.
  p.set("hot");
  const auto behind = p.scan(2 * p.small_items());
  REQUIRE(p.w->stats().moved_to_main > 0);
  REQUIRE(p.w->stats().evictions == 0);
  p.access("hot");  // in main now, with frequency 1

  // Keys that are read while in small move to main; main's tail then frees
  // the oldest items: "hot" is re-inserted once, the unread keys behind it go.
  int driven = 0;
  auto drive_until = [&](auto done) {
    while (!done()) {
      auto k = p.scan(1);
      p.access(k[0]);
      REQUIRE(++driven < 200000);
    }
  };
  drive_until([&] { return !p.has(behind.front()); });
  CHECK(p.w->stats().reinserted == 1);
  CHECK(p.has("hot"));  // the oldest in main, yet kept: it was read
  CHECK(p.has(behind.back()));  // main's tail has not reached it yet

  // Its frequency went from 1 to 0: the next time main's tail reaches it, it
  // is evicted, not re-inserted again.
  drive_until([&] { return !p.has("hot"); });
  CHECK(p.w->stats().reinserted == 1);
  CHECK(p.w->stats().evictions > 0);
}

TEST_CASE("s3fifo: a moved item keeps its write-behind acknowledgement (the old id follows the moves)") {
  Policy p(10, 64 << 10, /*redis_tier=*/true);
  p.fill();
  p.scan(p.small_items());
  // Three writes waiting for their acknowledgement, each with the id it had then.
  p.set("moved");
  p.set("twice");
  p.set("replaced");
  const uint64_t moved_id = p.w->item_id("moved"), twice_id = p.w->item_id("twice");
  const uint64_t replaced_id = p.w->item_id("replaced");
  for (const char* k : {"moved", "twice", "replaced"}) p.access(k);
  // Small's tail reaches them: read, they move to main (new ids).
  const uint64_t moved0 = p.w->stats().moved_to_main;
  p.scan(2 * p.small_items());
  REQUIRE(p.w->stats().moved_to_main >= moved0 + 3);
  REQUIRE(p.w->item_id("moved") != moved_id);
  REQUIRE(p.has("twice"));
  // "twice" is read again in main: main's tail re-inserts it (a second move);
  // "replaced" too, so that it is still there for the newer write below.
  p.access("twice");
  p.access("replaced");
  const uint64_t in_main_id = p.w->item_id("twice");
  const uint64_t reinserted0 = p.w->stats().reinserted;
  int driven = 0;
  while (p.w->item_id("twice") == in_main_id) {
    auto k = p.scan(1);
    p.access(k[0]);  // read keys move to main: main's tail turns over
    REQUIRE(++driven < 200000);
  }
  REQUIRE(p.w->stats().reinserted > reinserted0);
  REQUIRE(p.has("moved") == false);  // unread in main since its move: evicted meanwhile
  // A newer local write replaces "replaced" after its moves: the old write's
  // acknowledgement must not mark the new one.
  REQUIRE(p.has("replaced"));
  REQUIRE(p.w->set("replaced", "newer", 0, 0) == Status::ok);

  // holds(): what a refused lease fill asks before dropping the key's copy.
  CHECK(p.w->holds("twice", twice_id));
  CHECK_FALSE(p.w->holds("replaced", replaced_id));
  CHECK_FALSE(p.w->holds("moved", moved_id));
  CHECK(p.w->mark_synced("twice", twice_id));  // small -> main -> main: followed twice
  CHECK_FALSE(p.w->mark_synced("replaced", replaced_id));
  CHECK_FALSE(p.w->mark_synced("moved", moved_id));  // gone
  CHECK_FALSE(p.w->mark_synced("twice", 0));
  // Marked synced: a restart with a snapshot of this table adopts it.
  auto o = p.w->options();
  o.redis_snapshot_generation = p.w->generation();
  p.r.close();
  p.w.reset();
  auto w2 = nctest::make_writer(o);
  INFO(w2->start_report().summary());
  CHECK(w2->contains("twice"));
  CHECK_FALSE(w2->contains("replaced"));  // the newer write was never acknowledged
}

TEST_CASE("s3fifo: moves are remembered up to a bound, and an item moved before it stays unsynced") {
  Policy p(10, 64 << 10, /*redis_tier=*/true);
  p.set("first");
  const uint64_t first_id = p.w->item_id("first");
  p.access("first");
  // Read keys, each moved from small to main: more moves than the bound after "first"'s.
  int driven = 0;
  while (p.w->item_id("first") == first_id) {
    p.access(p.scan(1)[0]);
    REQUIRE(++driven < 100000);
  }
  // Read now and then, it stays (re-inserted: more moves, but its first is
  // the oldest of them all).
  const uint64_t moves0 = p.w->stats().moved_to_main + p.w->stats().reinserted;
  while (p.w->stats().moved_to_main + p.w->stats().reinserted - moves0 <= Writer::kMaxMoves) {
    p.access(p.scan(1)[0]);
    if (++driven % 1000 == 0) p.access("first");
    REQUIRE(driven < 200000);
  }
  REQUIRE(p.has("first"));
  CHECK_FALSE(p.w->mark_synced("first", first_id));  // forgotten: the safe side
  // A recent move is still followed.
  p.set("recent");
  const uint64_t recent_id = p.w->item_id("recent");
  p.access("recent");
  while (p.w->item_id("recent") == recent_id) {
    p.access(p.scan(1)[0]);
    REQUIRE(++driven < 300000);
  }
  CHECK(p.w->mark_synced("recent", recent_id));
}

TEST_CASE("s3fifo: a full table keeps taking every size, the large ones straight into main") {
  // value_limit above a quarter of the small queue: such items skip small.
  Policy p(10, 256 << 10);
  p.fill();
  const uint64_t big = p.small_bytes / 4;
  std::vector<size_t> sizes;
  for (size_t n = 0; n <= 1500; ++n) sizes.push_back(n);
  for (size_t n = 1501; n < (256 << 10); n = n * 5 / 4) sizes.push_back(n);
  sizes.push_back(big - 32);
  sizes.push_back(big);
  sizes.push_back(256 << 10);
  std::string v;
  int large = 0;
  uint64_t min_entries = UINT64_MAX;
  for (int round = 0; round < 3; ++round) {
    for (size_t i = 0; i < sizes.size(); ++i) {
      const std::string key = "z" + std::to_string(round) + "-" + std::to_string(i);
      const std::string value(sizes[i], char('a' + i % 26));
      const uint64_t small_before = p.w->stats().small_used;
      REQUIRE(p.w->set(key, value, 0, 0) == Status::ok);
      REQUIRE(nctest::read(p.r, key, &v) == ReadStatus::hit);
      REQUIRE(v == value);
      p.hits.deliver(*p.w);  // the daemon's timer would, well before the next few sets
      const auto s = p.w->stats();
      REQUIRE(s.small_used + s.main_used <= s.data_bytes);
      min_entries = std::min(min_entries, s.entries);
      // An item over a quarter of small goes to main: small is not touched.
      if (item_bytes(key.size(), value.size()) > big) REQUIRE(s.small_used == small_before);
      large += item_bytes(key.size(), value.size()) > big;
    }
  }
  CHECK(large >= 9);
  CHECK(min_entries > 100);  // never wiped wholesale
  CHECK(p.w->stats().evictions > 1000);
}
