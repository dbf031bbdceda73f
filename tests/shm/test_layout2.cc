// tests/shm/test_layout2.cc — what layout 2 adds: hit regions (created,
// sealed, validated and read by pread), the header's epoch (an O(1) drop of
// the whole table that readers see at once and the writer reclaims lazily),
// negative entries, the header flags, and the version check both ways.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "shm_fixture.h"

using namespace nearcache::shm;

namespace {

struct Table : nctest::Table {
  ReadStatus get(const std::string& k, std::string* v = nullptr) {
    std::string ignored;
    return nctest::read(r, k, v ? v : &ignored);
  }
};

int sealed_memfd(uint64_t size, int seals) {
  const int fd = memfd_create("test", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  REQUIRE(fd >= 0);
  REQUIRE(ftruncate(fd, off_t(size)) == 0);
  if (seals) REQUIRE(fcntl(fd, F_ADD_SEALS, seals) == 0);
  return fd;
}

int adopt(int fd, std::unique_ptr<HitSource>* out, std::string* why) { return HitSource::adopt(fd, 1, out, why); }

// A new hit region and the daemon's side of it, adopted at now_ms.
std::pair<std::unique_ptr<HitRegion>, std::unique_ptr<HitSource>> region_and_source(uint64_t now_ms) {
  std::string why;
  auto region = HitRegion::create(&why);
  REQUIRE(region);
  std::unique_ptr<HitSource> src;
  REQUIRE(HitSource::adopt(dup(region->fd()), now_ms, &src, &why) == 0);
  return {std::move(region), std::move(src)};
}

// The live entries for_each sees.
uint64_t visible(Writer& w) {
  uint64_t n = 0;
  w.for_each([&](const Item&) { ++n; });
  return n;
}

}  // namespace

// ---------------------------------------------------------------- hit regions

TEST_CASE("a hit region is a sealed memfd of the exact size, and the daemon's side accepts it") {
  std::string why;
  auto region = HitRegion::create(&why);
  REQUIRE(region);
  const int seals = fcntl(region->fd(), F_GET_SEALS);
  CHECK((seals & (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)) == (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL));
  struct stat st;
  REQUIRE(fstat(region->fd(), &st) == 0);
  CHECK(uint64_t(st.st_size) == kHitRegionBytes);
  CHECK(ftruncate(region->fd(), 0) != 0);  // the seal holds
  std::unique_ptr<HitSource> src;
  REQUIRE(adopt(dup(region->fd()), &src, &why) == 0);
}

TEST_CASE("the daemon's side refuses what is not a sealed region of the exact size, and closes it") {
  std::unique_ptr<HitSource> src;
  std::string why;
  CHECK(adopt(sealed_memfd(kHitRegionBytes, 0), &src, &why) == EPERM);
  CHECK(why.find("sealed") != std::string::npos);
  CHECK(adopt(sealed_memfd(kHitRegionBytes, F_SEAL_GROW), &src, &why) == EPERM);
  CHECK(adopt(sealed_memfd(kHitRegionBytes - 8, F_SEAL_SHRINK | F_SEAL_GROW), &src, &why) == EINVAL);
  CHECK(why.find("size") != std::string::npos);
  CHECK(adopt(sealed_memfd(kHitRegionBytes + 4096, F_SEAL_SHRINK | F_SEAL_GROW), &src, &why) == EINVAL);
  int p[2];
  REQUIRE(pipe(p) == 0);
  const int write_end = p[1];
  CHECK(adopt(p[0], &src, &why) == EINVAL);
  CHECK(fcntl(p[0], F_GETFD) == -1);  // closed by adopt
  close(write_end);
  nctest::TempDir d;
  const int f = open(d.file("regular").c_str(), O_RDWR | O_CREAT, 0600);
  REQUIRE(ftruncate(f, off_t(kHitRegionBytes)) == 0);
  CHECK(adopt(f, &src, &why) == EINVAL);  // a regular file has no seals
  CHECK_FALSE(src);
}

TEST_CASE("a region's hits reach the writer's frequencies and counters, and indexes out of range are ignored") {
  Table t;
  nctest::Hits hits(&t.r);
  REQUIRE(t.w->set("k", "v", 0, 0) == Status::ok);
  for (int i = 0; i < 7; ++i) REQUIRE(t.get("k") == ReadStatus::hit);
  CHECK(t.get("absent") == ReadStatus::miss);
  t.r.note_local_miss();  // the caller answered that miss itself (a definite one)
  CHECK(hits.region->hits() == 7);
  CHECK(hits.region->misses() == 1);
  CHECK(hits.region->local_misses() == 1);
  // A hostile owner: way indexes past the table, in the empty 8th slot, garbage.
  uint32_t* ring = hits.region->ring();
  HitRegionHeader* h = hits.region->header();
  const uint64_t head = h->head;
  ring[head % kHitRing] = UINT32_MAX;
  ring[(head + 1) % kHitRing] = uint32_t(t.w->way_index_limit());
  ring[(head + 2) % kHitRing] = 7;  // bucket 0, way 7: not a way
  h->head = head + 3;
  hits.deliver(*t.w);
  auto s = t.w->stats();
  CHECK(s.reader_hits == 7);
  CHECK(s.reader_misses == 1);
  CHECK(s.reader_local_misses == 1);
}

TEST_CASE("a region's counters are believed only as far as they plausibly grew") {
  auto [region, src] = region_and_source(1000);
  HitRegionHeader* h = region->header();
  std::vector<uint32_t> ways;
  HitDeltas d;
  h->hits = uint64_t(1) << 63;
  h->misses = UINT64_MAX;
  h->local_misses = UINT64_MAX - 1;
  REQUIRE(src->poll(1, 1 << 20, 1010, &ways, &d));  // 10 ms later
  CHECK(d.hits == 10 * HitSource::kMaxLookupsPerMs);
  CHECK(d.misses == 10 * HitSource::kMaxLookupsPerMs);
  CHECK(d.local_misses == 10 * HitSource::kMaxLookupsPerMs);
  // A decrease restarts the baseline: nothing is counted, later growth is.
  d = {};
  h->hits = 5;
  REQUIRE(src->poll(1, 1 << 20, 1020, &ways, &d));
  CHECK(d.hits == 0);
  h->hits = 12;
  REQUIRE(src->poll(1, 1 << 20, 1030, &ways, &d));
  CHECK(d.hits == 7);
  // Garbage in place of the header: nothing is believed.
  d = {};
  std::vector<unsigned char> junk(kHitRegionBytes, 0xA5);
  REQUIRE(pwrite(region->fd(), junk.data(), junk.size(), 0) == ssize_t(junk.size()));
  REQUIRE(src->poll(1, 1 << 20, 1040, &ways, &d));
  CHECK(d.hits == 0);
  CHECK(ways.empty());
}

TEST_CASE("a region read after holes were punched in it reads zeros, and its ring takes the newest entries") {
  auto [region, src] = region_and_source(0);
  region->set_generation(42);
  for (uint32_t i = 0; i < kHitRing + 100; ++i) region->hit(i);
  std::vector<uint32_t> ways;
  HitDeltas d;
  REQUIRE(src->poll(42, UINT32_MAX, 1000, &ways, &d));
  REQUIRE(ways.size() == kHitRing);  // the ring holds the newest kHitRing
  CHECK(ways.front() == 100);
  CHECK(ways.back() == kHitRing + 99);
  CHECK(d.hits == kHitRing + 100);
  // Entries of another generation are not applied (counters still are).
  for (uint32_t i = 0; i < 10; ++i) region->hit(i);
  ways.clear();
  REQUIRE(src->poll(43, UINT32_MAX, 2000, &ways, &d));
  CHECK(ways.empty());
  // Holes: the region reads as zeros; the daemon's side neither faults nor believes anything.
  REQUIRE(fallocate(region->fd(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, off_t(kHitRegionBytes)) == 0);
  d = {};
  ways.clear();
  REQUIRE(src->poll(42, UINT32_MAX, 3000, &ways, &d));
  CHECK(d.hits == 0);
  CHECK(ways.empty());
}

// ---------------------------------------------------------------- epoch: O(1) drop

TEST_CASE("drop_all empties the table for readers at once, touching no bucket, and the writer reclaims lazily") {
  Table t;
  for (int i = 0; i < 500; ++i) REQUIRE(t.w->set("k" + std::to_string(i), std::string(100, 'x'), 0, 0) == Status::ok);
  REQUIRE(t.get("k7") == ReadStatus::hit);
  const auto* base = static_cast<const unsigned char*>(t.w->segment_base());
  const auto* h = reinterpret_cast<const Header*>(base);
  const auto* buckets = reinterpret_cast<const Bucket*>(base + h->buckets_offset);
  std::vector<uint32_t> versions;
  for (uint32_t b = 0; b < t.w->bucket_count(); ++b) versions.push_back(buckets[b].version);

  CHECK(t.w->drop_all() == 500);
  CHECK(h->epoch == 1);
  for (uint32_t b = 0; b < t.w->bucket_count(); ++b) REQUIRE(buckets[b].version == versions[b]);  // O(1)
  auto s = t.w->stats();
  CHECK(s.entries == 0);
  CHECK(s.live_bytes == 0);
  CHECK(s.drops == 1);
  CHECK(visible(*t.w) == 0);
  for (int i = 0; i < 500; i += 7) {
    CHECK(t.get("k" + std::to_string(i)) == ReadStatus::miss);
    CHECK_FALSE(t.w->contains("k" + std::to_string(i)));
  }
  // Writes after the drop are served; rewriting old keys counts each once.
  for (int i = 0; i < 100; ++i) REQUIRE(t.w->set("k" + std::to_string(i), "new", 0, 0) == Status::ok);
  CHECK(t.w->stats().entries == 100);
  std::string v;
  REQUIRE(t.get("k3", &v) == ReadStatus::hit);
  CHECK(v == "new");
  CHECK(t.get("k300") == ReadStatus::miss);
  CHECK(t.w->del("k300") == Status::not_found);

  // Fill well past the data area: the logs reclaim the dropped items as their
  // tails reach them, and no count goes wrong (a dropped item is never
  // uncounted twice).
  for (int i = 0; i < 40000; ++i) REQUIRE(t.w->set("n" + std::to_string(i), std::string(150, 'y'), 0, 0) == Status::ok);
  s = t.w->stats();
  CHECK(s.entries == visible(*t.w));
  CHECK(s.entries > 1000);
  CHECK(s.small_used + s.main_used <= s.data_bytes);
  REQUIRE(t.get("n39999", &v) == ReadStatus::hit);
  // A second drop, then a prefix clear and the sweep, still agree with for_each.
  REQUIRE(t.w->set("e1", "v", 0, monotonic_ms() + 100000) == Status::ok);
  const uint64_t live = t.w->stats().entries;  // the set may have evicted one
  CHECK(t.w->drop_all() == live);
  CHECK(t.w->expire_step(t.w->bucket_count()) == 0);
  REQUIRE(t.w->set("pfx:a", "v", 0, 0) == Status::ok);
  const uint64_t cid = t.w->clear_begin("pfx:");
  while (!t.w->clear_step(1024)) {
  }
  CHECK(t.w->clear_take(cid) == 1);
  CHECK(t.w->stats().entries == 0);
  CHECK(visible(*t.w) == 0);
}

TEST_CASE("drop_all completes the clears pending before it") {
  Table t;
  REQUIRE(t.w->set("a:1", "v", 0, 0) == Status::ok);
  REQUIRE(t.w->set("b:1", "v", 0, 0) == Status::ok);
  const uint64_t cid = t.w->clear_begin("a:");
  CHECK_FALSE(t.w->clear_done(cid));
  CHECK(t.w->drop_all() == 2);
  CHECK(t.w->clear_done(cid));
  CHECK(t.w->clear_step(16));
  REQUIRE(t.w->set("a:2", "v", 0, 0) == Status::ok);  // written after: survives
  CHECK(t.get("a:2") == ReadStatus::hit);
}

// ---------------------------------------------------------------- negative entries

TEST_CASE("a negative entry is a definite miss to readers and absent to every writer operation") {
  Table t;
  REQUIRE(t.w->set_negative("gone", 0) == Status::ok);
  CHECK(t.get("gone") == ReadStatus::negative);
  CHECK(t.w->stats().negatives == 1);
  Item it;
  CHECK_FALSE(t.w->get("gone", &it));
  CHECK_FALSE(t.w->contains("gone"));
  int64_t n = 0;
  CHECK(t.w->incr("gone", 1, &n) == Status::not_found);
  CHECK(t.w->touch("gone", 0) == Status::not_found);
  CHECK(visible(*t.w) == 0);
  CHECK(t.w->add("gone", "v", 0, 0) == Status::ok);  // ADD treats it as absent
  std::string v;
  REQUIRE(t.get("gone", &v) == ReadStatus::hit);
  CHECK(v == "v");
  CHECK(t.w->stats().negatives == 0);
  CHECK(t.w->stats().entries == 1);

  REQUIRE(t.w->set_negative("gone", 0) == Status::ok);  // a store replaces a value, too
  CHECK(t.get("gone") == ReadStatus::negative);
  CHECK(t.w->del("gone") == Status::not_found);  // removed, but it was no value
  CHECK(t.get("gone") == ReadStatus::miss);
  CHECK(t.w->stats().entries == 0);

  // Expiry and clears apply as to values.
  REQUIRE(t.w->set_negative("brief", 1) == Status::ok);  // expired already
  CHECK(t.get("brief") == ReadStatus::miss);
  REQUIRE(t.w->set_negative("c:x", 0) == Status::ok);
  const uint64_t cid = t.w->clear_begin("c:");
  while (!t.w->clear_step(1024)) {
  }
  t.w->clear_take(cid);
  CHECK(t.get("c:x") == ReadStatus::miss);
  CHECK(t.w->stats().negatives == 0);
}

// ---------------------------------------------------------------- flags

TEST_CASE("the header flags: authoritative is reported, suspended makes every lookup ask the daemon") {
  Table t;
  REQUIRE(t.w->set("k", "v", 0, 0) == Status::ok);
  CHECK_FALSE(t.r.authoritative());
  t.w->set_authoritative(true);
  CHECK(t.r.authoritative());
  CHECK(t.get("k") == ReadStatus::hit);
  t.w->set_suspended(true);
  CHECK(t.r.suspended());
  CHECK(t.r.authoritative());
  CHECK(t.get("k") == ReadStatus::suspended);
  CHECK(t.get("nope") == ReadStatus::suspended);
  t.w->set_suspended(false);
  CHECK(t.get("k") == ReadStatus::hit);
  t.w->set_authoritative(false);
  CHECK(t.w->flags() == 0);
}

// ---------------------------------------------------------------- versions

TEST_CASE("a reader refuses a segment of another layout version, and a layout-1 reader refuses this one") {
  Table t;
  std::vector<unsigned char> image(t.w->segment_bytes());
  std::memcpy(image.data(), t.w->segment_base(), image.size());
  auto* h = reinterpret_cast<Header*>(image.data());
  Reader r;
  std::string why;
  REQUIRE(r.attach(image.data(), image.size(), &why) == 0);
  h->layout_version = 1;  // a layout-1 image (its header is laid out alike up to the version)
  CHECK(r.attach(image.data(), image.size(), &why) == EPROTONOSUPPORT);
  CHECK(why.find("layout version 1") != std::string::npos);
  // A layout-1 reader checks `layout_version == 1` at the same offset: this
  // segment says 2 there, so it answers EPROTONOSUPPORT and uses the socket.
  h->layout_version = kLayoutVersion;
  CHECK(offsetof(Header, layout_version) == 8);
  CHECK(reinterpret_cast<const Header*>(t.w->segment_base())->layout_version == 2);
  CHECK(reinterpret_cast<const Header*>(t.w->segment_base())->writer_state_offset == kWriterStateOffset);
}
