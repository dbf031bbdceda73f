// Every table operation through the writer, observed through a reader
// mapping of the same segment: TTL edges, limits, clear, generations,
// permissions, and a full table under sustained random-size sets.
#include <sched.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <map>
#include <random>

#include "segment_file.h"
#include "shm_fixture.h"

using namespace nearcache::shm;
using nctest::read;

namespace {

// A clock tests can move: starts at the real monotonic time so that
// heartbeats written with it look fresh to readers.
uint64_t g_now = 0;
uint64_t fake_now() { return g_now; }

struct Table : nctest::Table {
  using nctest::Table::Table;
  void use_fake_clock() {
    g_now = monotonic_ms();
    w->set_clock(fake_now);
    w->heartbeat();
  }
  ReadStatus get(const std::string& k, std::string* v) { return read(r, k, v, g_now ? g_now : monotonic_ms()); }
};

std::string msgpack_int_bytes(std::initializer_list<int> b) {
  std::string s;
  for (int c : b) s.push_back(char(c));
  return s;
}

}  // namespace

TEST_CASE("set, overwrite and read values of every small size") {
  Table t;
  std::string v;
  for (size_t n = 0; n <= 300; ++n) {
    std::string key = "key-" + std::to_string(n);
    std::string value(n, char('a' + n % 26));
    REQUIRE(t.w->set(key, value, uint8_t(n), 0) == Status::ok);
    REQUIRE(t.get(key, &v) == ReadStatus::hit);
    REQUIRE(v == value);
  }
  REQUIRE(t.w->set("key-5", "replaced", 9, 0) == Status::ok);
  REQUIRE(t.get("key-5", &v) == ReadStatus::hit);
  CHECK(v == "replaced");
  CHECK(t.w->stats().entries == 301);

  std::string buf(64, '\0');
  auto res = t.r.get("key-5", 5, buf.data(), buf.size());
  CHECK(res.status == ReadStatus::hit);
  CHECK(res.flags == 9);
  CHECK(res.expiry_ms == 0);
  CHECK(t.get("missing", &v) == ReadStatus::miss);
}

TEST_CASE("a buffer too small is reported with the size needed") {
  Table t;
  REQUIRE(t.w->set("k", std::string(1000, 'x'), 0, 0) == Status::ok);
  char small[10];
  auto res = t.r.get("k", 1, small, sizeof small);
  CHECK(res.status == ReadStatus::too_small);
  CHECK(res.value_len == 1000);
}

TEST_CASE("keys are bytes: empty, binary, long, and Django-style") {
  Table t;
  std::string v;
  const std::string binary("a\0b\xff\n", 5);
  for (const std::string& k : {std::string(), binary, std::string(250, 'k'), std::string(":1:views.decorators.cache")}) {
    REQUIRE(t.w->set(k, "v:" + k, 0, 0) == Status::ok);
    REQUIRE(t.get(k, &v) == ReadStatus::hit);
    CHECK(v == "v:" + k);
  }
  CHECK(t.get(std::string("a\0b\xff", 4), &v) == ReadStatus::miss);
  // A default string_view has a null data(): a decoder hands these over (found by fuzz_protocol).
  REQUIRE(t.w->set(std::string_view(), std::string_view(), 0, 0) == Status::ok);
  REQUIRE(t.get(std::string(), &v) == ReadStatus::hit);
  CHECK(v.empty());
}

TEST_CASE("add only when absent or expired") {
  Table t;
  t.use_fake_clock();
  std::string v;
  CHECK(t.w->add("k", "1", 0, 0) == Status::ok);
  CHECK(t.w->add("k", "2", 0, 0) == Status::exists);
  REQUIRE(t.get("k", &v) == ReadStatus::hit);
  CHECK(v == "1");
  CHECK(t.w->add("t", "1", 0, g_now + 100) == Status::ok);
  g_now += 100;
  CHECK(t.w->add("t", "2", 0, 0) == Status::ok);
  REQUIRE(t.get("t", &v) == ReadStatus::hit);
  CHECK(v == "2");
}

TEST_CASE("delete") {
  Table t;
  std::string v;
  REQUIRE(t.w->set("k", "v", 0, 0) == Status::ok);
  CHECK(t.w->del("k") == Status::ok);
  CHECK(t.get("k", &v) == ReadStatus::miss);
  CHECK(t.w->del("k") == Status::not_found);
  CHECK(t.w->stats().entries == 0);
}

TEST_CASE("TTL edges: none, zero, past, far future, expiry at the exact millisecond") {
  Table t;
  t.use_fake_clock();
  std::string v;

  SECTION("no expiry") {
    REQUIRE(t.w->set("k", "v", 0, 0) == Status::ok);
    g_now += uint64_t(10) * 365 * 86400 * 1000;
    t.w->heartbeat();
    CHECK(t.get("k", &v) == ReadStatus::hit);
  }
  SECTION("zero and negative TTLs expire at once: the key is gone") {
    REQUIRE(t.w->set("k", "old", 0, 0) == Status::ok);
    REQUIRE(t.w->set("k", "v", 0, expiry_from_ttl(0, g_now)) == Status::ok);
    CHECK(t.get("k", &v) == ReadStatus::miss);
    CHECK_FALSE(t.w->contains("k"));
    CHECK(t.w->add("k2", "v", 0, expiry_from_ttl(-5, g_now)) == Status::ok);
    CHECK(t.get("k2", &v) == ReadStatus::miss);
    CHECK(t.w->stats().entries == 0);
  }
  SECTION("an expiry in the past") {
    REQUIRE(t.w->set("k", "v", 0, g_now - 1) == Status::ok);
    CHECK(t.get("k", &v) == ReadStatus::miss);
  }
  SECTION("huge TTLs saturate instead of wrapping into the past") {
    const uint64_t e = expiry_from_ttl(INT64_MAX, g_now);
    CHECK(e == g_now + uint64_t(INT64_MAX));
    CHECK(expiry_from_ttl(INT64_MAX, UINT64_MAX - 5) == UINT64_MAX);
    REQUIRE(t.w->set("k", "v", 0, e) == Status::ok);
    g_now += uint64_t(1) << 40;
    t.w->heartbeat();
    CHECK(t.get("k", &v) == ReadStatus::hit);
  }
  SECTION("the reader treats an entry as expired at its expiry, before the writer reclaims it") {
    REQUIRE(t.w->set("k", "v", 0, g_now + 1000) == Status::ok);
    CHECK(t.get("k", &v) == ReadStatus::hit);
    g_now += 999;
    CHECK(t.get("k", &v) == ReadStatus::hit);
    g_now += 1;
    CHECK(t.get("k", &v) == ReadStatus::miss);
    CHECK(t.w->stats().entries == 1);  // not reclaimed yet
    CHECK(t.w->expire_step(1u << 20) == 1);
    CHECK(t.w->stats().entries == 0);
    CHECK(t.w->stats().expirations == 1);
  }
}

TEST_CASE("the expiry sweep reclaims proactively, a slice at a time") {
  Table t;
  t.use_fake_clock();
  for (int i = 0; i < 1000; ++i) REQUIRE(t.w->set("e" + std::to_string(i), "v", 0, g_now + 50) == Status::ok);
  for (int i = 0; i < 100; ++i) REQUIRE(t.w->set("p" + std::to_string(i), "v", 0, 0) == Status::ok);
  g_now += 50;
  size_t reclaimed = 0, steps = 0;
  while (t.w->stats().entries > 100 && steps < 100000) reclaimed += t.w->expire_step(64), ++steps;
  CHECK(reclaimed == 1000);
  CHECK(steps > 1);  // in slices
  CHECK(t.w->stats().entries == 100);
}

TEST_CASE("touch changes the expiry of existing keys only") {
  Table t;
  t.use_fake_clock();
  std::string v;
  CHECK(t.w->touch("missing", g_now + 10) == Status::not_found);
  REQUIRE(t.w->set("k", "v", 0, g_now + 10) == Status::ok);
  CHECK(t.w->touch("k", g_now + 1000) == Status::ok);
  g_now += 500;
  CHECK(t.get("k", &v) == ReadStatus::hit);
  CHECK(t.w->touch("k", 0) == Status::ok);  // forever
  g_now += 100000;
  t.w->heartbeat();
  CHECK(t.get("k", &v) == ReadStatus::hit);
  CHECK(t.w->touch("k", expiry_from_ttl(0, g_now)) == Status::ok);  // expire now: deleted
  CHECK(t.get("k", &v) == ReadStatus::miss);
  CHECK(t.w->touch("k", g_now + 10) == Status::not_found);
}

TEST_CASE("incr on msgpack integers keeps flags and expiry") {
  Table t;
  t.use_fake_clock();
  int64_t out = 0;
  std::string v;
  CHECK(t.w->incr("missing", 1, &out) == Status::not_found);

  REQUIRE(t.w->set("k", msgpack_int_bytes({0x05}), 3, g_now + 5000) == Status::ok);
  CHECK(t.w->incr("k", 10, &out) == Status::ok);
  CHECK(out == 15);
  CHECK(t.w->incr("k", -20, &out) == Status::ok);
  CHECK(out == -5);
  std::string buf(16, '\0');
  auto res = t.r.get_at("k", 1, buf.data(), buf.size(), g_now);
  REQUIRE(res.status == ReadStatus::hit);
  CHECK(std::string(buf.data(), res.value_len) == msgpack_int_bytes({0xfb}));  // negative fixint -5
  CHECK(res.flags == 3);
  CHECK(res.expiry_ms == g_now + 5000);

  // Every integer encoding is accepted, and results use the smallest one.
  struct Case {
    std::string in;
    int64_t delta, want;
  };
  for (const Case& c : {Case{msgpack_int_bytes({0xcc, 0xff}), 1, 256}, Case{msgpack_int_bytes({0xcd, 0x01, 0x00}), -1, 255},
                        Case{msgpack_int_bytes({0xce, 0, 1, 0, 0}), 0, 65536},
                        Case{msgpack_int_bytes({0xcf, 0, 0, 0, 1, 0, 0, 0, 0}), 1, 4294967297},
                        Case{msgpack_int_bytes({0xd0, 0x80}), -1, -129}, Case{msgpack_int_bytes({0xd1, 0xff, 0x00}), 0, -256},
                        Case{msgpack_int_bytes({0xd2, 0xff, 0xff, 0xff, 0xff}), 2, 1},
                        Case{msgpack_int_bytes({0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0}), 1, INT64_MIN + 1}}) {
    REQUIRE(t.w->set("n", c.in, 0, 0) == Status::ok);
    CHECK(t.w->incr("n", c.delta, &out) == Status::ok);
    CHECK(out == c.want);
  }

  SECTION("not an integer") {
    REQUIRE(t.w->set("s", "\xa3" "abc", 0, 0) == Status::ok);  // msgpack "abc"
    CHECK(t.w->incr("s", 1, &out) == Status::not_integer);
    REQUIRE(t.w->set("two", msgpack_int_bytes({0x01, 0x02}), 0, 0) == Status::ok);  // two objects
    CHECK(t.w->incr("two", 1, &out) == Status::not_integer);
    REQUIRE(t.w->set("bool", msgpack_int_bytes({0xc3}), 0, 0) == Status::ok);
    CHECK(t.w->incr("bool", 1, &out) == Status::not_integer);
  }
  SECTION("decr by the most negative delta") {
    REQUIRE(t.w->set("m", msgpack_int_bytes({0xff}), 0, 0) == Status::ok);  // -1
    CHECK(t.w->decr("m", INT64_MIN, &out) == Status::ok);
    CHECK(out == INT64_MAX);
    REQUIRE(t.w->set("z", msgpack_int_bytes({0x00}), 0, 0) == Status::ok);
    CHECK(t.w->decr("z", INT64_MIN, &out) == Status::out_of_range);
    CHECK(t.w->decr("z", 5, &out) == Status::ok);
    CHECK(out == -5);
  }
  SECTION("overflow leaves the value unchanged") {
    REQUIRE(t.w->set("max", msgpack_int_bytes({0xd3, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}), 0, 0) ==
            Status::ok);
    CHECK(t.w->incr("max", 1, &out) == Status::out_of_range);
    CHECK(t.w->incr("max", -1, &out) == Status::ok);
    CHECK(out == INT64_MAX - 1);
  }
}

TEST_CASE("key and value limits are exact, with a clear status, never a truncation") {
  Table t;
  std::string v;
  const std::string at_limit(250, 'k'), over(251, 'k');
  const std::string value_at(64 << 10, 'v'), value_over((64 << 10) + 1, 'v');
  CHECK(t.w->set(at_limit, value_at, 0, 0) == Status::ok);
  REQUIRE(t.get(at_limit, &v) == ReadStatus::hit);
  CHECK(v == value_at);
  CHECK(t.w->set(over, "v", 0, 0) == Status::key_too_long);
  CHECK(t.w->add(over, "v", 0, 0) == Status::key_too_long);
  CHECK(t.w->set("k", value_over, 0, 0) == Status::value_too_large);
  CHECK(t.w->del(over) == Status::key_too_long);
  CHECK(t.w->touch(over, 0) == Status::key_too_long);
  int64_t out;
  CHECK(t.w->incr(over, 1, &out) == Status::key_too_long);
  CHECK(t.get(over, &v) == ReadStatus::miss);
  CHECK(t.get("k", &v) == ReadStatus::miss);  // nothing partial was stored
  CHECK(std::string(status_name(Status::value_too_large)) == "value_too_large");
}

TEST_CASE("clear removes everything, or exactly the keys under a prefix") {
  Table t;
  std::string v;
  for (int i = 0; i < 500; ++i) {
    REQUIRE(t.w->set("a:" + std::to_string(i), "v", 0, 0) == Status::ok);
    REQUIRE(t.w->set("ab:" + std::to_string(i), "v", 0, 0) == Status::ok);
  }
  SECTION("prefix") {
    const uint64_t id = t.w->clear_begin("a:");
    CHECK_FALSE(t.w->clear_done(id));
    while (!t.w->clear_step(16)) {
    }
    CHECK(t.w->clear_done(id));
    CHECK(t.w->clear_take(id) == 500);
    CHECK(t.w->clear_take(id) == 0);  // taken once
    CHECK(t.get("a:7", &v) == ReadStatus::miss);
    CHECK(t.get("ab:7", &v) == ReadStatus::hit);
    CHECK(t.w->stats().entries == 500);
  }
  SECTION("everything") {
    const uint64_t id = t.w->clear_begin("");
    while (!t.w->clear_step(16)) {
    }
    CHECK(t.w->clear_take(id) == 1000);
    CHECK(t.w->stats().entries == 0);
    CHECK(t.get("ab:7", &v) == ReadStatus::miss);
  }
  SECTION("writes made after the clear began survive it; earlier ones never reappear") {
    const uint64_t id = t.w->clear_begin("");
    t.w->clear_step(4);  // part of the table is done
    for (int i = 0; i < 500; ++i) REQUIRE(t.w->set("new:" + std::to_string(i), "n", 0, 0) == Status::ok);
    CHECK_FALSE(t.w->contains("a:499"));  // a bucket not yet swept answers as cleared
    const uint64_t second = t.w->clear_begin("ab:");
    REQUIRE(t.w->set("ab:new", "n", 0, 0) == Status::ok);
    while (!t.w->clear_step(8)) {
    }
    CHECK(t.w->clear_done(id));
    CHECK(t.w->clear_done(second));
    CHECK(t.w->clear_take(id) + t.w->clear_take(second) == 1000);  // the old keys, each counted once
    CHECK(t.w->stats().entries == 501);
    for (int i = 0; i < 500; ++i) REQUIRE(t.get("new:" + std::to_string(i), &v) == ReadStatus::hit);
    CHECK(t.get("ab:new", &v) == ReadStatus::hit);
    CHECK(t.get("a:3", &v) == ReadStatus::miss);
  }
}

TEST_CASE("a cold writer makes a new generation, readers of the old one see it stopped") {
  nctest::TempDir d;
  auto opts = nctest::small_options(d);
  opts.warm_restart = false;  // test_adopt.cc: the warm restart
  auto w1 = nctest::make_writer(opts);
  REQUIRE(w1->set("k", "old", 0, 0) == Status::ok);
  auto r1 = nctest::open_reader(opts.path);
  const uint64_t g1 = r1.generation();
  CHECK(r1.alive(monotonic_ms()));

  std::string why;
  CHECK(Writer::create(opts, &why) == nullptr);  // a second writer refuses
  CHECK(why.find("in use by another nearcached") != std::string::npos);

  w1.reset();  // the old writer stops (the segment stays; its lock file too, unlocked)
  CHECK_FALSE(r1.alive(monotonic_ms()));
  auto w2 = nctest::make_writer(opts);
  auto r2 = nctest::open_reader(opts.path);
  CHECK(r2.generation() > g1);
  std::string v;
  CHECK(read(r2, "k", &v) == ReadStatus::miss);
  CHECK(read(r1, "k", &v) == ReadStatus::unavailable);  // old mapping: still safe to use
  REQUIRE(w2->set("k", "new", 0, 0) == Status::ok);
  CHECK(read(r2, "k", &v) == ReadStatus::hit);
}

TEST_CASE("a writer that vanished without stopping leaves a stale heartbeat") {
  Table t;
  t.use_fake_clock();
  std::string v;
  REQUIRE(t.w->set("k", "v", 0, 0) == Status::ok);
  CHECK(t.get("k", &v) == ReadStatus::hit);
  g_now += t.r.heartbeat_grace_ms();
  CHECK(t.get("k", &v) == ReadStatus::hit);
  g_now += 1;
  CHECK(t.r.stale(g_now));
  CHECK(t.get("k", &v) == ReadStatus::unavailable);
  t.w->heartbeat();
  CHECK(t.get("k", &v) == ReadStatus::hit);
}

TEST_CASE("objects get exact permissions and group, regardless of umask") {
  nctest::TempDir d;
  auto opts = nctest::small_options(d);
  opts.group = getegid();
  const mode_t old = umask(0);
  auto w = nctest::make_writer(opts);
  umask(old);
  struct stat st;
  REQUIRE(stat(opts.path.c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0640);
  CHECK(st.st_gid == getegid());
  // Layout 2 creates no writable object besides its own segment: no hints file.
  CHECK_FALSE(std::filesystem::exists(opts.path + ".hints"));
  if (geteuid() == 0) {  // root may hand the segment to any group, as the daemon does
    opts.path = d.file("other");
    opts.group = 4242;
    auto w2 = nctest::make_writer(opts);
    REQUIRE(stat(opts.path.c_str(), &st) == 0);
    CHECK(st.st_gid == 4242u);
  }
}

TEST_CASE("POSIX shared-memory names work like files") {
  WriterOptions o;
  o.path = "/nearcache-test-" + std::to_string(getpid());
  o.posix_shm = true;
  o.segment_bytes = 2 << 20;
  o.value_limit = 4096;
  std::string why;
  auto w = Writer::create(o, &why);
  REQUIRE(w);
  Reader r;
  ReaderOptions ro;
  ro.posix_shm = true;
  REQUIRE(r.open(o.path, &why, ro) == 0);
  CHECK(r.hits() == nullptr);  // no hit region attached
  REQUIRE(w->set("k", "v", 0, 0) == Status::ok);
  std::string v;
  CHECK(read(r, "k", &v) == ReadStatus::hit);
  w->remove();
  w.reset();
  shm_unlink((o.path + ".lock").c_str());
}

TEST_CASE("sizes that cannot work are refused with a reason") {
  nctest::TempDir d;
  auto o = nctest::small_options(d, 64 << 10);
  std::string why;
  CHECK(Writer::create(o, &why) == nullptr);
  CHECK(why.find("too small for items") != std::string::npos);
  o = nctest::small_options(d);
  o.key_limit = 70000;
  CHECK(Writer::create(o, &why) == nullptr);
  CHECK(why.find("key limit") != std::string::npos);
}

TEST_CASE("a segment the filesystem cannot hold is refused at creation, not a SIGBUS later") {
  if (geteuid() != 0) {
    WARN("not root: cannot mount a small tmpfs; skipped");
    return;
  }
  nctest::TempDir d;
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {  // a private mount namespace, so nothing leaks to the host
    if (unshare(CLONE_NEWNS) != 0 || mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
        mount("tmpfs", d.path().c_str(), "tmpfs", 0, "size=1m") != 0)
      _exit(3);
    auto o = nctest::small_options(d, 8 << 20);
    std::string why;
    auto w = Writer::create(o, &why);
    const bool clear = !w && why.find("cannot reserve") != std::string::npos && why.find("too small") != std::string::npos;
    _exit(clear ? 0 : 1);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  REQUIRE(WIFEXITED(status));
  if (WEXITSTATUS(status) == 3) {
    WARN("cannot mount a tmpfs here; skipped");
    return;
  }
  CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("reader hits are counted from each process's hit region") {
  Table t;
  nctest::Hits hits(&t.r);
  REQUIRE(t.w->set("k", "v", 0, 0) == Status::ok);
  std::string v;
  for (int i = 0; i < 10; ++i) REQUIRE(t.get("k", &v) == ReadStatus::hit);
  CHECK(t.get("nope", &v) == ReadStatus::miss);
  hits.deliver(*t.w);
  auto s = t.w->stats();
  CHECK(s.reader_hits == 10);
  CHECK(s.reader_misses == 1);

  // A child process records into its own region; its counts add up.
  nctest::Hits child_hits;
  const pid_t pid = fork();
  if (pid == 0) {
    Reader r = nctest::open_reader(t.w->path());
    r.attach_hits(child_hits.region.get());
    std::string value;
    for (int i = 0; i < 5; ++i) nctest::read(r, "k", &value);
    _exit(0);
  }
  waitpid(pid, nullptr, 0);
  child_hits.deliver(*t.w);
  hits.deliver(*t.w);
  CHECK(t.w->stats().reader_hits == 15);
  // Without a region a Reader serves hits and records nothing.
  Reader quiet = nctest::open_reader(t.w->path());
  CHECK(nctest::read(quiet, "k", &v) == ReadStatus::hit);
  hits.deliver(*t.w);
  CHECK(t.w->stats().reader_hits == 15);
}

TEST_CASE("for_each visits every live entry") {
  Table t;
  t.use_fake_clock();
  std::map<std::string, std::string> want;
  for (int i = 0; i < 200; ++i) {
    want["k" + std::to_string(i)] = std::to_string(i * i);
    REQUIRE(t.w->set("k" + std::to_string(i), std::to_string(i * i), 0, 0) == Status::ok);
  }
  REQUIRE(t.w->set("gone", "x", 0, g_now + 1) == Status::ok);
  g_now += 1;
  std::map<std::string, std::string> seen;
  t.w->for_each([&](const Item& it) { seen[std::string(it.key)] = std::string(it.value); });
  CHECK(seen == want);
}

TEST_CASE("a full table keeps taking random-size sets without wiping itself") {
  Table t(4 << 20);
  std::mt19937_64 rng(42);
  std::string v;
  const auto s0 = t.w->stats();
  uint64_t min_entries_after_full = UINT64_MAX;
  std::vector<std::string> recent;
  for (int i = 0; i < 60000; ++i) {
    // Mostly small values, some large, a few at the limit.
    const uint64_t r = rng() % 1000;
    const size_t size = r < 900 ? rng() % 512 : r < 995 ? rng() % 16384 : (64 << 10);
    const std::string key = "k" + std::to_string(rng() % 20000);
    const std::string value(size, char('a' + i % 26));
    REQUIRE(t.w->set(key, value, 0, 0) == Status::ok);
    recent.push_back(key);
    if (recent.size() > 8) recent.erase(recent.begin());
    const auto s = t.w->stats();
    REQUIRE(s.item_bytes <= s0.data_bytes);
    REQUIRE(s.small_used + s.main_used <= s0.data_bytes);
    if (s.evictions > 0) min_entries_after_full = std::min(min_entries_after_full, s.entries);
    if (i % 97 == 0) {
      REQUIRE(t.get(key, &v) == ReadStatus::hit);  // the latest set is always there
      REQUIRE(v == value);
    }
  }
  const auto s = t.w->stats();
  CHECK(s.evictions > 1000);
  CHECK(s.wraps > 10);
  // Never wiped wholesale: once full, the table kept a large population.
  CHECK(min_entries_after_full > 1000);
  INFO("entries " << s.entries << ", live bytes " << s.live_bytes << " of " << s.data_bytes);
  CHECK(s.item_bytes > s.data_bytes / 2);
  for (const auto& k : recent) CHECK(t.get(k, &v) == ReadStatus::hit);
}

TEST_CASE("per-entry metadata is at most 32 bytes at the planned item size") {
  nctest::TempDir d;
  WriterOptions o;
  o.path = d.file("segment");
  o.segment_bytes = 64 << 20;
  o.expected_item_bytes = 232;  // 16 B key + 200 B value + 16 B item header
  auto w = nctest::make_writer(o);
  const std::string value(200, 'v');
  char key[17];
  int n = 0;
  while (true) {
    snprintf(key, sizeof key, "key-%012d", n);
    REQUIRE(w->set(std::string_view(key, 16), value, 0, 0) == Status::ok);
    if (w->stats().evictions > 0) break;
    ++n;
  }
  const auto s = w->stats();
  const double per_entry = double(s.index_bytes + s.item_bytes - s.live_bytes) / double(s.entries);
  INFO("entries " << s.entries << ", index " << s.index_bytes << " B, metadata per entry " << per_entry << " B");
  CHECK(per_entry <= 32.0);
  CHECK(s.index_evictions == 0);
}

TEST_CASE("a full index moves entries between their two buckets, then evicts, every entry stays readable") {
  nctest::TempDir d;
  auto o = nctest::small_options(d, 4 << 20);
  o.expected_item_bytes = 4096;  // plans far fewer entries than the tiny values below make
  auto w = nctest::make_writer(o);
  auto r = nctest::open_reader(o.path);
  for (int i = 0; i < 20000; ++i) REQUIRE(w->set("k" + std::to_string(i), std::to_string(i), 0, 0) == Status::ok);
  const auto s = w->stats();
  CHECK(s.index_moves > 0);
  CHECK(s.index_evictions > 0);
  CHECK(s.entries > s.index_ways * 9 / 10);  // the index fills almost completely before it evicts
  CHECK(s.entries <= s.index_ways);
  size_t seen = 0;
  std::string v;
  w->for_each([&](const Item& it) {
    REQUIRE(read(r, std::string(it.key), &v) == ReadStatus::hit);
    REQUIRE(v == it.value);
    ++seen;
  });
  CHECK(seen == s.entries);
}

TEST_CASE("remove() takes the names away, lock included, and a new writer starts cleanly") {
  nctest::TempDir d;
  auto opts = nctest::small_options(d);
  auto w1 = nctest::make_writer(opts);
  w1->remove();
  CHECK_FALSE(std::filesystem::exists(opts.path));
  CHECK_FALSE(std::filesystem::exists(opts.path + ".hints"));
  CHECK_FALSE(std::filesystem::exists(opts.path + ".lock"));
  // w1 still holds the unlinked lock: a new writer locks a new file.
  auto w2 = nctest::make_writer(opts);
  CHECK(std::filesystem::exists(opts.path + ".lock"));
  std::string why;
  CHECK(Writer::create(opts, &why) == nullptr);  // but a third one is refused
}
