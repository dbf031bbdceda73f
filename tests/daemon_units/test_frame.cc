// tests/daemon_units/test_frame.cc — the incremental frame scanner.
#include <catch2/catch.hpp>
#include <msgpack.hpp>
#include <string>

#include "protocol/frame.h"

using nearcache::daemon::FrameScanner;
using R = FrameScanner::Result;

namespace {
template <typename... T>
std::string frame(const T&... items) {
  msgpack::sbuffer b;
  msgpack::packer<msgpack::sbuffer> pk(b);
  pk.pack_array(sizeof...(items));
  (pk.pack(items), ...);
  return std::string(b.data(), b.size());
}
R scan_all(FrameScanner& s, const std::string& bytes) {
  return s.scan(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size());
}
}  // namespace

TEST_CASE("a complete frame is found, with its id") {
  FrameScanner s(1 << 20);
  const std::string f = frame(5u, 77u, std::string("key"), std::vector<int>{1, 2, 3});
  REQUIRE(scan_all(s, f + "trailing") == R::complete);
  CHECK(s.size() == f.size());
  CHECK(s.has_id());
  CHECK(s.id() == 77);
}

TEST_CASE("a frame arriving a byte at a time resumes where it stopped") {
  FrameScanner s(1 << 20);
  std::map<std::string, std::vector<std::string>> m{{"a", {"x", "y"}}};
  const std::string f = frame(7u, uint64_t(1) << 40, m, std::string(300, 'v'), msgpack::type::nil_t(), -5, 1.5, true);
  for (size_t n = 1; n < f.size(); ++n) REQUIRE(s.scan(reinterpret_cast<const unsigned char*>(f.data()), n) == R::need_more);
  REQUIRE(scan_all(s, f) == R::complete);
  CHECK(s.size() == f.size());
  CHECK(s.id() == uint64_t(1) << 40);
}

TEST_CASE("the payload of a long value is skipped, not scanned, and announced by needed()") {
  FrameScanner s(1 << 20);
  const std::string f = frame(5u, 1u, std::string(100000, 'x'));
  REQUIRE(s.scan(reinterpret_cast<const unsigned char*>(f.data()), 20) == R::need_more);
  CHECK(s.needed() == f.size());
}

TEST_CASE("a header announcing more than the limit is refused before the bytes arrive") {
  FrameScanner s(1000);
  // [5, 9, bin32 of 1 GiB] with only the header present
  const unsigned char hdr[] = {0x93, 0x05, 0x09, 0xc6, 0x40, 0x00, 0x00, 0x00};
  REQUIRE(s.scan(hdr, sizeof hdr) == R::too_large);
  CHECK(s.has_id());
  CHECK(s.id() == 9);
  CHECK(s.error().find("FRAME_TOO_LARGE") == 0);

  FrameScanner a(1000);
  const unsigned char arr[] = {0xdd, 0xff, 0xff, 0xff, 0xff};  // array32 of 4G elements
  REQUIRE(a.scan(arr, sizeof arr) == R::too_large);
  CHECK_FALSE(a.has_id());
}

TEST_CASE("a frame exactly at the limit passes, one byte more does not") {
  const std::string f = frame(5u, 1u, std::string(100, 'x'));
  FrameScanner at(f.size()), under(f.size() - 1);
  CHECK(scan_all(at, f) == R::complete);
  CHECK(scan_all(under, f) == R::too_large);
}

TEST_CASE("bad frames") {
  auto bad = [](std::string bytes) {
    FrameScanner s(1 << 20);
    return scan_all(s, bytes);
  };
  CHECK(bad("\xc1") == R::bad);
  CHECK(bad("\x05") == R::bad);                        // not an array
  CHECK(bad("\x81\x01\x02") == R::bad);                // a map
  CHECK(bad(std::string("\x92\x01\xc1", 3)) == R::bad);
  CHECK(bad(std::string(17, '\x91') + "\xc0") == R::bad);  // too deep
  CHECK(bad(std::string(16, '\x91') + "\xc0") == R::complete);
  FrameScanner e(1 << 20);
  CHECK(scan_all(e, "\x90") == R::complete);  // [] is a frame; the dispatcher rejects it
  CHECK(e.size() == 1);
}

TEST_CASE("a negative or non-integer id is not captured") {
  FrameScanner a(1 << 20), b(1 << 20);
  CHECK(scan_all(a, frame(2u, -1)) == R::complete);
  CHECK_FALSE(a.has_id());
  CHECK(scan_all(b, frame(2u, std::string("x"))) == R::complete);
  CHECK_FALSE(b.has_id());
}

TEST_CASE("reset scans the next frame") {
  FrameScanner s(1 << 20);
  const std::string f1 = frame(2u, 1u), f2 = frame(3u, 2u, std::string("k"));
  const std::string both = f1 + f2;
  REQUIRE(scan_all(s, both) == R::complete);
  REQUIRE(s.size() == f1.size());
  s.reset();
  REQUIRE(s.scan(reinterpret_cast<const unsigned char*>(both.data() + f1.size()), f2.size()) == R::complete);
  CHECK(s.id() == 2);
}

TEST_CASE("a frame whose last element's payload is still arriving is not complete") {
  FrameScanner s(1 << 20);
  const std::string f = frame(3u, 1u, std::string(50, 'k'));
  for (size_t n = 1; n < f.size(); ++n) {
    INFO(n);
    REQUIRE(s.scan(reinterpret_cast<const unsigned char*>(f.data()), n) == R::need_more);
  }
  REQUIRE(scan_all(s, f) == R::complete);
  CHECK(s.size() == f.size());
}
