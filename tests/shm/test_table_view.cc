// tests/shm/test_table_view.cc — TableView (shm/table_view.h) against the
// writer that made the table: every live entry once, with its size; way
// indexes back to keys; expired, deleted, negative and cleared entries.
// Corrupt images are walked in test_corrupt.cc.
#include <catch2/catch.hpp>
#include <map>

#include "shm_fixture.h"
#include "table_view.h"

using namespace nearcache::shm;

namespace {

std::map<std::string, EntryInfo> walk(const TableView& v, uint64_t now) {
  std::map<std::string, EntryInfo> all;
  BucketEntries b;
  for (uint32_t i = 0; i < v.bucket_count(); ++i) {
    REQUIRE(v.read_bucket(i, now, &b));
    for (const auto& e : b.entries) REQUIRE(all.emplace(std::string(b.key(e)), e).second);  // once each
  }
  return all;
}

}  // namespace

TEST_CASE("a walk sees every live entry once, with its item size") {
  nctest::TempDir d;
  auto w = nctest::make_writer(nctest::small_options(d));
  std::map<std::string, std::string> want;
  for (int i = 0; i < 500; ++i) {
    const std::string k = "p" + std::to_string(i % 7) + ":" + std::to_string(i), v(size_t(i % 90), 'v');
    REQUIRE(w->set(k, v, uint8_t(i), 0) == Status::ok);
    want[k] = v;
  }
  const uint64_t now = monotonic_ms();
  REQUIRE(w->set("short:1", "x", 0, now + 60000) == Status::ok);  // walked at now + 60001: expired
  REQUIRE(w->set("gone:1", "x", 0, 0) == Status::ok);
  REQUIRE(w->del("gone:1") == Status::ok);
  REQUIRE(w->set_negative("neg:1", 0) == Status::ok);

  Reader r;
  std::string why;
  REQUIRE(r.open(d.file("segment"), &why) == 0);
  const TableView v(r);
  auto all = walk(v, now + 60001);
  REQUIRE(all.size() == want.size() + 1);
  CHECK(all.at("neg:1").negative);
  for (const auto& [k, val] : want) {
    const EntryInfo& e = all.at(k);
    CHECK(e.value_len == val.size());
    CHECK(e.item_bytes == item_bytes(k.size(), val.size()));
    CHECK(!e.negative);
  }
  CHECK(walk(v, now).count("short:1") == 1);  // not yet expired

  // Way indexes back to keys: exactly the live, non-negative entries.
  size_t found = 0;
  std::string key;
  for (uint64_t wi = 0; wi < v.way_index_limit(); ++wi)
    if (v.key_at(uint32_t(wi), now + 60001, &key)) {
      CHECK(want.count(key) == 1);
      ++found;
    }
  CHECK(found == want.size());
  CHECK(!v.key_at(uint32_t(v.way_index_limit()), now, &key));

  w->drop_all();  // a new epoch: every bucket reads as empty
  CHECK(walk(v, now).empty());
}
