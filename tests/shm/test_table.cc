// Every table operation through the writer, observed through a reader.
#include <catch2/catch.hpp>

#include "shm_fixture.h"

using namespace nearcache::shm;
using nctest::read;

TEST_CASE("set then read from another mapping") {
  nctest::TempDir d;
  auto w = nctest::make_writer(nctest::small_options(d));
  auto r = nctest::open_reader(w->path());
  REQUIRE(w->set("k", "v1", 7, 0) == Status::ok);
  std::string v;
  REQUIRE(read(r, "k", &v) == ReadStatus::hit);
  CHECK(v == "v1");
  CHECK(read(r, "nope", &v) == ReadStatus::miss);
}
