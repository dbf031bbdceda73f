// tests/redis/test_value.cc — the Redis value encoding (redis/value.h):
// every (bytes, flags) round-trips, version-1 values read as version 1 wrote
// them, foreign values are detected, what a version-1 reader makes of
// version 2, and the scripts and the read-through against a real Redis.
#include <functional>
#include <map>
#include <random>

#include "fixture.h"

using namespace nearcache::redis;
using nctest::mp_int;

namespace {

// Version 1's encoder and decoder, verbatim in behaviour (the code before
// version 2): what an old host writes and reads.
std::string encode_v1(std::string_view value, uint8_t flags) {
  if (flags == 0) return std::string(value);
  const uint64_t n = value.size() + 1;
  std::string s;
  if (n <= 0xff) {
    s += char(0xc7), s += char(n);
  } else if (n <= 0xffff) {
    s += char(0xc8), s += char(n >> 8), s += char(n);
  } else {
    s += char(0xc9);
    for (int i = 3; i >= 0; --i) s += char(n >> (8 * i));
  }
  s += char(kEnvelopeExt);
  s += char(flags);
  s.append(value);
  return s;
}
void decode_v1(std::string_view s, std::string_view* value, uint8_t* flags) {
  *value = s;
  *flags = 0;
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t hdr, n = 0;
  if (s.size() < 4) return;
  if (p[0] == 0xc7) hdr = 2, n = p[1];
  else if (p[0] == 0xc8 && s.size() >= 5) hdr = 3, n = size_t(p[1]) << 8 | p[2];
  else if (p[0] == 0xc9 && s.size() >= 7) hdr = 5, n = size_t(p[1]) << 24 | size_t(p[2]) << 16 | size_t(p[3]) << 8 | p[4];
  else return;
  if (int8_t(p[hdr]) != kEnvelopeExt || n < 1 || hdr + 1 + n != s.size()) return;
  *flags = p[hdr + 1];
  *value = s.substr(hdr + 2);
}

// Whether (value, flags) reads back exactly from what version 2 writes
// (never as foreign, never as a version-1 envelope).
bool round_trips(const std::string& value, uint8_t flags) {
  const std::string stored = encode_value(value, flags);
  std::string_view v;
  uint8_t f = 0xee;
  const Stored kind = decode_value(stored, &v, &f);
  return kind != Stored::foreign && kind != Stored::v1 && v == value && f == flags;
}

}  // namespace

TEST_CASE("every byte string of up to 3 bytes, with any flags, round-trips", "[redis][value]") {
  std::string s;
  uint64_t tried = 0, failed = 0;
  std::function<void(size_t)> all = [&](size_t left) {
    for (uint8_t flags : {uint8_t(0), uint8_t(1), uint8_t(0x80), uint8_t(0xff)}) {
      tried++;
      if (!round_trips(s, flags)) {
        if (failed++ < 10) FAIL_CHECK("does not round-trip: " << printable(s) << " flags " << int(flags));
      }
    }
    if (left == 0) return;
    for (int b = 0; b < 256; ++b) {
      s.push_back(char(b));
      all(left - 1);
      s.pop_back();
    }
  };
  all(3);
  CHECK(tried == 4 * (1 + 256 + 65536 + 16777216ull));
  CHECK(failed == 0);
}

TEST_CASE("random byte strings, random msgpack and envelope look-alikes round-trip", "[redis][value]") {
  std::mt19937_64 rng(12);
  const std::vector<std::string> heads = {"\xc7", "\xc8", "\xc9", "\xc1", std::string(kEnvelopeV2), "\x93", "\xdc",
                                          "\xdf", "\xd4\x7e", std::string("\xc7\x03\x7e\x00", 4), "\xc7\x02\x7e\x01"};
  for (int i = 0; i < 200000; ++i) {
    std::string s = rng() % 3 == 0 ? heads[rng() % heads.size()] : std::string();
    const size_t n = rng() % (i % 100 == 0 ? 300 : 12);
    for (size_t j = 0; j < n; ++j) s.push_back(char(rng() % (rng() % 2 ? 256 : 8)));
    const uint8_t flags = uint8_t(rng() % 4 == 0 ? rng() : 0);
    if (!round_trips(s, flags)) FAIL_CHECK("does not round-trip: " << printable(s) << " flags " << int(flags));
  }
  // Values that are version-1 envelopes themselves, stored with flags 0: version 1
  // wrote them bare, so another host read other bytes and flags.
  for (size_t n : {0, 1, 200, 254, 255, 256, 70000}) {
    const std::string env = encode_v1(std::string(n, 'x'), 0x41);
    CHECK(round_trips(env, 0));
    CHECK(encode_value(env, 0).starts_with(kEnvelopeV2));
  }
}

TEST_CASE("msgpack values with flags 0 are stored as their bytes, anything else in a version-2 envelope",
          "[redis][value]") {
  for (const std::string& plain : {std::string("\x93\x01\x02\x03"), mp_int(5), mp_int(-1), mp_int(INT64_MAX),
                                   std::string("\xa3" "abc"), std::string("\xc0"), std::string("\x80"),
                                   std::string("\xd4\x01\x05", 3), std::string("\x82\xa1" "a\x90\xa1" "b\xc3")}) {
    CHECK(encode_value(plain, 0) == plain);
    std::string_view v;
    uint8_t f;
    CHECK(decode_value(plain, &v, &f) == Stored::bare);
    CHECK((v == plain && f == 0));
  }
  CHECK(encode_value("not msgpack", 0) == std::string(kEnvelopeV2) + '\0' + "not msgpack");
  CHECK(encode_value("", 0) == std::string(kEnvelopeV2) + '\0');
  CHECK(encode_value(mp_int(5), 1) == std::string(kEnvelopeV2) + '\x01' + mp_int(5));
  CHECK(encode_value(std::string("\x05\x05", 2), 0).starts_with(kEnvelopeV2));  // two objects
}

TEST_CASE("version-1 values read as version 1 wrote them", "[redis][value]") {
  std::string_view v;
  uint8_t f;
  for (size_t n : {0, 1, 200, 254, 255, 256, 65534, 65535, 70000}) {
    const std::string val(n, 'p');
    for (uint8_t flags : {1, 2, 0x41, 0xff}) {
      const std::string stored = encode_v1(val, flags);
      CHECK(decode_value(stored, &v, &f) == Stored::v1);
      CHECK((v == val && f == flags));
    }
  }
  const std::string seven = encode_v1(mp_int(7), 0);
  CHECK(decode_value(seven, &v, &f) == Stored::bare);  // flags 0: bare msgpack
  CHECK((v == mp_int(7) && f == 0));
}

TEST_CASE("foreign values: whole, with the foreign flag", "[redis][value]") {
  std::string_view v;
  uint8_t f;
  for (const std::string& s : {std::string("not msgpack"), std::string(""), std::string("\xc1"),
                               std::string("\xc1nc\x03\x00\x05", 6),           // a later version's envelope
                               std::string("\xc1nc", 3), std::string("\xc1nc\x02", 4),  // a truncated one
                               std::string("\xc7\x05\x7e\x01" "ab", 6),        // starts like a v1 envelope
                               std::string("\x92\x01"), std::string("\xdd\xff\xff\xff\xff"),
                               std::string("\xda\x00\x05" "abc", 6), std::string("\x05\x05", 2),
                               std::string("{\"json\": 1}"), std::string("12")}) {
    INFO(printable(s));
    CHECK(decode_value(s, &v, &f) == Stored::foreign);
    CHECK((v == s && f == kFlagForeign));
  }
  // "5" (ASCII digits, as django-redis stores integers) is one msgpack fixint: not detectable.
  CHECK(decode_value("5", &v, &f) == Stored::bare);
}

TEST_CASE("a version-1 reader sees every version-2 envelope as bytes no msgpack decoder accepts", "[redis][value]") {
  std::mt19937_64 rng(7);
  for (int i = 0; i < 20000; ++i) {
    std::string val;
    for (size_t j = rng() % 40; j > 0; --j) val.push_back(char(rng()));
    const uint8_t flags = uint8_t(rng());
    const std::string stored = encode_value(val, flags);
    if (!stored.starts_with(kEnvelopeV2)) continue;
    std::string_view v;
    uint8_t f;
    decode_v1(stored, &v, &f);
    CHECK(f == 0);  // never misread as a v1 envelope with other flags ...
    CHECK(v == stored);
    CHECK(uint8_t(v[0]) == 0xc1);  // ... and msgpack's reserved byte first: the client's decode fails
    CHECK_FALSE(is_one_msgpack(v));
  }
}

TEST_CASE_METHOD(nctest::OneRedis, "INCR keeps each envelope version, the read-through flags foreign values",
                 "[redis][value]") {
  nctest::DataPath d(loop, cfg);
  d.start();
  auto incr = [&](const std::string& key) {
    AtomicResult out;
    bool done = false;
    REQUIRE(d.atomics->incr(key, 1, [&](const AtomicResult& r) { out = r, done = true; }));
    REQUIRE(loop.until([&] { return done; }));
    return out;
  };
  redis.cmdv({"SET", "nc:v2", encode_value(mp_int(41), 2)});
  redis.cmdv({"SET", "nc:v1", encode_v1(mp_int(9), 3)});
  redis.cmdv({"SET", "nc:bare", mp_int(-1)});
  redis.cmdv({"SET", "nc:foreign", "not msgpack"});
  AtomicResult r = incr("v2");
  CHECK((r.kind == AtomicResult::Kind::ok && r.number == 42 && r.flags == 2));
  CHECK(redis.cmd("GET nc:v2").str() == std::string(kEnvelopeV2) + '\x02' + mp_int(42));
  r = incr("v1");
  CHECK((r.kind == AtomicResult::Kind::ok && r.number == 10 && r.flags == 3));
  CHECK(redis.cmd("GET nc:v1").str() == encode_v1(mp_int(10), 3));  // an old host still reads it
  r = incr("bare");
  CHECK((r.kind == AtomicResult::Kind::ok && r.number == 0 && r.flags == 0));
  CHECK(redis.cmd("GET nc:bare").str() == mp_int(0));
  CHECK(incr("foreign").kind == AtomicResult::Kind::not_integer);

  std::map<std::string, Fetched> got;
  for (const char* k : {"v2", "v1", "bare", "foreign"}) {
    Fetched now;
    REQUIRE(d.reads->get(k, &now, [&got, k](const Fetched& f) { got[k] = f; }) == Lookup::pending);
  }
  REQUIRE(loop.until([&] { return got.size() == 4; }));
  CHECK((got["v2"].value == mp_int(42) && got["v2"].flags == 2));
  CHECK((got["v1"].value == mp_int(10) && got["v1"].flags == 3));
  CHECK((got["bare"].value == mp_int(0) && got["bare"].flags == 0));
  CHECK(got["foreign"].kind == Fetched::Kind::hit);
  CHECK((got["foreign"].value == "not msgpack" && got["foreign"].flags == kFlagForeign));
  CHECK(d.reads->stats().foreign_total == 1);

  // LEASE's script returns the stored bytes: the same decoding.
  redis.cmdv({"SET", "nc:leased", "\xff\xfe raw"});
  AtomicResult l;
  bool done = false;
  REQUIRE(d.atomics->lease("leased", 1, 1000, [&](const AtomicResult& x) { l = x, done = true; }));
  REQUIRE(loop.until([&] { return done; }));
  CHECK(l.kind == AtomicResult::Kind::value);
  CHECK((l.value == "\xff\xfe raw" && l.flags == kFlagForeign));
}

TEST_CASE("redis_value_format = 1 writes what version 1 wrote", "[redis][value]") {
  std::mt19937_64 rng(3);
  for (int i = 0; i < 20000; ++i) {
    std::string val;
    for (size_t j = rng() % (i % 50 == 0 ? 70000 : 40); j > 0; --j) val.push_back(char(rng()));
    const uint8_t flags = uint8_t(rng() % 2 ? rng() : 0);
    const std::string stored = encode_value(val, flags, 1);
    CHECK(stored == encode_v1(val, flags));
    std::string_view v;
    uint8_t f;
    decode_value(stored, &v, &f);
    if (flags != 0) CHECK((v == val && f == flags));  // flags 0: bare, as version 1 had it
  }
}

TEST_CASE_METHOD(nctest::OneRedis, "a queued value reads back as stored in either format (read-your-writes)",
                 "[redis][value]") {
  for (uint64_t format : {1, 2}) {
    cfg.value_format = format;
    nctest::DataPath d(loop, cfg);  // not started: the writes stay queued
    for (const auto& [v, f] : std::vector<std::pair<std::string, uint8_t>>{
             {"not msgpack", 0}, {mp_int(5), 0}, {"raw", 7}, {std::string("\xc7\x03\x7e\x01" "ab", 6), 0}}) {
      REQUIRE(d.queue->set("k", v, f, 0) != Enqueued::dropped);
      PendingValue pv;
      REQUIRE(d.queue->pending("k", &pv) == Pending::value);
      INFO("format " << format << ": " << printable(v));
      // Format 1 keeps version 1's one ambiguity: a flags-0 value that looks like its envelope.
      if (format == 1 && v[0] == '\xc7') continue;
      CHECK((pv.value == v && pv.flags == f));
    }
  }
}
