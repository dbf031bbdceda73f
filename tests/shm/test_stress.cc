// Torn-read stress: one writer rewrites values of varying sizes, each
// carrying a checksum over its key and value, in a table small enough that
// memory and bucket ways are reused for other keys all the time, while
// readers verify every value they get. Zero torn values may be returned, and
// the test checks that the race was real (retries happened, memory was reused).
//
//   [processes]  readers are fork()ed processes mapping the segment (the real setup)
//   [threads]    readers are threads, so ThreadSanitizer can check the seqlock
//
// NEARCACHE_STRESS_READS sets the number of verified reads (default 10^6;
// `make stress` runs 10^8).
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cstring>
#include <random>
#include <thread>

#include "shm_fixture.h"
#include "siphash.h"

using namespace nearcache::shm;

namespace {

constexpr int kKeys = 4000;
constexpr int kHotKeys = 16;
constexpr size_t kMaxValue = 4096;

uint64_t reads_wanted(uint64_t fallback) {
  const char* e = getenv("NEARCACHE_STRESS_READS");
  return e ? std::strtoull(e, nullptr, 10) : fallback;
}

std::string key_of(uint64_t i) { return "stress-key-" + std::to_string(i); }

uint64_t checksum(std::string_view key, const char* payload, size_t n) {
  std::string buf(key);
  buf.append(payload, n);
  return siphash<2, 4>(0x0123456789abcdefULL, 0xfedcba9876543210ULL, buf.data(), buf.size());
}

// value = checksum(key, payload) followed by the payload
std::string make_value(std::string_view key, size_t n, uint64_t seed) {
  std::string v(8 + n, '\0');
  for (size_t i = 0; i < n; ++i) v[8 + i] = char(seed * 131 + i * 7);
  const uint64_t c = checksum(key, v.data() + 8, n);
  std::memcpy(v.data(), &c, 8);
  return v;
}

struct ReaderTally {
  uint64_t verified = 0, torn = 0, retries = 0, busy = 0, misses = 0;
  ReaderTally& operator+=(const ReaderTally& o) {
    verified += o.verified, torn += o.torn, retries += o.retries, busy += o.busy, misses += o.misses;
    return *this;
  }
};

// Half the traffic on a few hot keys, so readers and the writer meet on the
// same items.
uint64_t pick_key(std::mt19937_64& rng) { return rng() % 2 ? rng() % kHotKeys : rng() % kKeys; }

// Readers map the segment themselves (processes), or attach to the writer's
// own mapping (threads): ThreadSanitizer tracks memory by address, so it can
// only see the race when both sides use the same one.
ReaderTally read_until(const Writer& w, bool same_mapping, uint64_t target, uint64_t seed) {
  ReaderTally t;
  Reader r;
  std::string why;
  const int rc = same_mapping ? r.attach(w.segment_base(), w.segment_bytes(), &why) : r.open(w.path(), &why);
  if (rc != 0) {
    t.torn = UINT64_MAX;  // makes the failure loud
    return t;
  }
  std::mt19937_64 rng(seed);
  std::string buf(kMaxValue + 8, '\0');
  while (t.verified < target) {
    const std::string key = key_of(pick_key(rng));
    auto res = r.get(key.data(), key.size(), buf.data(), buf.size());
    t.retries += res.retries;
    if (res.status == ReadStatus::busy) ++t.busy;
    if (res.status == ReadStatus::miss) ++t.misses;
    if (res.status != ReadStatus::hit) continue;
    uint64_t c;
    std::memcpy(&c, buf.data(), 8);
    if (res.value_len < 8 || checksum(key, buf.data() + 8, res.value_len - 8) != c) ++t.torn;
    ++t.verified;
  }
  return t;
}

WriterOptions stress_options(const nctest::TempDir& d) {
  WriterOptions o;
  o.path = d.file("segment");
  o.segment_bytes = 2 << 20;
  o.key_limit = 64;
  o.value_limit = kMaxValue + 8;
  o.expected_item_bytes = 512;
  return o;
}

// One set with a fresh value of a random size; keys are reused with other sizes.
void write_one(Writer& w, std::mt19937_64& rng, uint64_t i) {
  const std::string key = key_of(pick_key(rng));
  const size_t n = rng() % 4 == 0 ? rng() % kMaxValue : rng() % 256;
  REQUIRE(w.set(key, make_value(key, n, i), 0, 0) == Status::ok);
}

void check(const ReaderTally& sum, const WriterStats& s, uint64_t target) {
  INFO("verified " << sum.verified << ", torn " << sum.torn << ", retries " << sum.retries << ", busy "
                   << sum.busy << ", misses " << sum.misses << ", sets " << s.sets << ", evictions "
                   << s.evictions << ", log wraps " << s.wraps);
  CHECK(sum.torn == 0);
  CHECK(sum.verified >= target);
  CHECK(sum.retries > 0);     // the readers really raced the writer
  CHECK(s.evictions > 1000);  // ways and memory were reused for other keys
  CHECK(s.wraps > 10);
  CHECK(s.drops > 0);
}

// A prefilled table, its writer, and the run's read target; write_until
// rewrites values (with heartbeats) until the readers say they are done.
struct Stress {
  nctest::TempDir dir;
  std::unique_ptr<Writer> w;
  std::mt19937_64 rng;
  const uint64_t target = reads_wanted(1000000);

  explicit Stress(uint64_t seed) : w(nctest::make_writer(stress_options(dir))), rng(seed) {
    for (uint64_t i = 0; i < kKeys; ++i) write_one(*w, rng, i);
  }
  template <class Done>
  void write_until(Done readers_done) {
    for (uint64_t i = kKeys;; ++i) {
      write_one(*w, rng, i);
      // Now and then the whole table goes at once (the header's epoch): the
      // dropped items' memory is reused while readers may still hold their ways.
      if (i % 16384 == 0) w->drop_all();
      if (i % 256 != 0) continue;
      w->heartbeat();
      if (readers_done()) return;
    }
  }
};

constexpr int kReaders = 2;

}  // namespace

TEST_CASE("no torn value under a rewriting writer: forked reader processes", "[processes]") {
  Stress st(1);
  pid_t pids[kReaders];
  int pipes[kReaders][2];
  for (int i = 0; i < kReaders; ++i) {
    REQUIRE(pipe(pipes[i]) == 0);
    pids[i] = fork();
    REQUIRE(pids[i] >= 0);
    if (pids[i] == 0) {
      ReaderTally t = read_until(*st.w, false, st.target / kReaders + 1, 100 + i);
      (void)!write(pipes[i][1], &t, sizeof t);
      _exit(0);  // not exit(): the inherited Writer must not run its destructor here
    }
    close(pipes[i][1]);
  }
  int running = kReaders;
  st.write_until([&] {
    while (waitpid(-1, nullptr, WNOHANG) > 0) --running;
    return running == 0;
  });
  ReaderTally sum;
  for (auto& p : pipes) {
    ReaderTally t;
    REQUIRE(read(p[0], &t, sizeof t) == sizeof t);
    close(p[0]);
    sum += t;
  }
  check(sum, st.w->stats(), st.target);
}

TEST_CASE("no torn value under a rewriting writer: reader threads", "[threads]") {
  Stress st(2);
  ReaderTally tallies[kReaders];
  std::atomic<int> done{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kReaders; ++i)
    threads.emplace_back([&, i] {
      tallies[i] = read_until(*st.w, true, st.target / kReaders + 1, 200 + i);
      done++;
    });
  st.write_until([&] { return done.load() == kReaders; });
  for (auto& t : threads) t.join();
  ReaderTally sum;
  for (auto& t : tallies) sum += t;
  check(sum, st.w->stats(), st.target);
}
