// bench/shm_reader.cc — the reader's hit path, side by side in one run:
//   hit (16 B key, 200 B value, 10^6 entries): uniformly random keys (every
//   lookup a cache miss), Zipf(0.99)-distributed keys, one hot key;
//   miss; hit while the writer rewrites the same hot keys;
//   aggregate throughput of 1 and 2 reader processes;
//   metadata bytes per entry at 10^6 entries;
//   and, for scale, this machine's latency of one dependent DRAM load.
// Every reader records its hits into its process's hit region, as a client
// does (hits.h). Per-operation latencies are timed one by one (timer cost subtracted) for
// medians and p99; throughput is ops over wall time. Repeated `--rounds`
// times; the medians of the rounds are printed.
//
// Usage: bench_shm_reader [--entries N] [--rounds R] [--dir DIR] [--no-region 1]
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "hits.h"
#include "reader.h"
#include "writer.h"
#include "zipf.h"

using namespace nearcache::shm;
using Clock = std::chrono::steady_clock;

namespace {

bool g_no_region = false;  // --no-region: readers record nothing (a client that registered none)

// This process's hit region (one per process, as a client has), attached to `r`.
void attach_region(Reader& r) {
  if (g_no_region) return;
  static std::unique_ptr<HitRegion> region;
  static pid_t owner = 0;
  if (owner != getpid()) {  // a forked child makes its own
    std::string why;
    region.release();  // the parent's mapping is inherited; leave it alone
    region = HitRegion::create(&why);
    owner = getpid();
    if (!region) {
      fprintf(stderr, "bench_shm_reader: %s\n", why.c_str());
      _exit(1);
    }
  }
  r.attach_hits(region.get());
}

}  // namespace

namespace {

struct Summary {
  double median_ns, p99_ns;
};

double ns_since(Clock::time_point t0) { return std::chrono::duration<double, std::nano>(Clock::now() - t0).count(); }

double timer_overhead_ns() {
  std::vector<double> v(100000);
  for (auto& x : v) {
    auto t0 = Clock::now();
    x = ns_since(t0);
  }
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

Summary summarize(std::vector<double>& v, double overhead) {
  std::sort(v.begin(), v.end());
  auto at = [&](double q) { return std::max(0.0, v[size_t(q * (v.size() - 1))] - overhead); };
  return {at(0.5), at(0.99)};
}

std::string key_of(uint64_t i) {
  std::string n = std::to_string(i);
  return "key-" + std::string(12 - n.size(), '0') + n;  // 16 bytes
}

// Nanoseconds per dependent load in a random cycle over `bytes` of memory.
double dram_latency_ns(size_t bytes) {
  const size_t n = bytes / 64;
  struct Line {
    size_t next;
    char pad[56];
  };
  std::vector<Line> a(n);
  std::vector<size_t> perm(n);
  for (size_t i = 0; i < n; ++i) perm[i] = i;
  std::shuffle(perm.begin(), perm.end(), std::mt19937_64(3));
  for (size_t i = 0; i < n; ++i) a[perm[i]].next = perm[(i + 1) % n];
  size_t p = perm[0];
  const int steps = 2000000;
  auto t0 = Clock::now();
  for (int i = 0; i < steps; ++i) p = a[p].next;
  const double ns = ns_since(t0) / steps;
  return p == SIZE_MAX ? 0 : ns;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Times `n` gets of keys from `pick` one by one.
template <class Pick>
Summary time_gets(Reader& r, int n, Pick pick, double overhead, ReadStatus want) {
  std::vector<double> lat(n);
  std::string buf(4096, '\0');
  int wrong = 0;
  char key[64];
  for (int i = 0; i < n; ++i) {
    const std::string& k = pick(i);  // the key is copied before timing: it is the caller's, not the table's, cost
    std::memcpy(key, k.data(), k.size());
    auto t0 = Clock::now();
    auto res = r.get(key, k.size(), buf.data(), buf.size());
    lat[i] = ns_since(t0);
    wrong += res.status != want;
  }
  if (wrong) fprintf(stderr, "warning: %d lookups did not answer %s\n", wrong, read_status_name(want));
  return summarize(lat, overhead);
}

// Gets per second over `seconds` of wall time, from `procs` processes at once.
double throughput(const std::string& path, const std::vector<std::string>& keys, int procs, double seconds) {
  int fds[2];
  if (pipe(fds) != 0) return 0;
  const auto t0 = Clock::now();
  for (int p = 0; p < procs; ++p) {
    if (fork() == 0) {
      Reader r;
      std::string why;
      if (r.open(path, &why) != 0) _exit(1);
      attach_region(r);
      std::string buf(4096, '\0');
      std::mt19937_64 rng(p + 1);
      uint64_t ops = 0;
      const auto start = Clock::now();
      while (std::chrono::duration<double>(Clock::now() - start).count() < seconds) {
        for (int i = 0; i < 1024; ++i) {
          const std::string& k = keys[rng() % keys.size()];
          r.get(k.data(), k.size(), buf.data(), buf.size());
        }
        ops += 1024;
      }
      (void)!write(fds[1], &ops, sizeof ops);
      _exit(0);
    }
  }
  close(fds[1]);
  uint64_t total = 0, ops;
  while (read(fds[0], &ops, sizeof ops) == sizeof ops) total += ops;
  close(fds[0]);
  while (wait(nullptr) > 0) {
  }
  return double(total) / std::chrono::duration<double>(Clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t entries = 1000000;
  int rounds = 5;
  std::string dir = "/dev/shm";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--entries")) entries = std::strtoull(argv[i + 1], nullptr, 10);
    if (!strcmp(argv[i], "--rounds")) rounds = atoi(argv[i + 1]);
    if (!strcmp(argv[i], "--dir")) dir = argv[i + 1];
    if (!strcmp(argv[i], "--no-region")) g_no_region = atoi(argv[i + 1]) != 0;
  }
  WriterOptions o;
  o.path = dir + "/nearcache-bench-" + std::to_string(getpid());
  o.expected_item_bytes = 232;
  // The bench writes no heartbeat while it fills 10^6 entries (longer than
  // the 2 s default grace): readers would answer unavailable, not hit.
  o.heartbeat_grace_ms = 600000;
  // Sized so that the entries just fit: the metadata figure is then the
  // table's real overhead at this population, not that of an emptier table.
  o.segment_bytes = uint64_t(double(entries) * (232 + 15.3) * 1.01) + (8 << 20);
  std::string why;
  auto w = Writer::create(o, &why);
  if (!w) {
    fprintf(stderr, "bench_shm_reader: %s\n", why.c_str());
    return 1;
  }
  std::vector<std::string> keys;
  keys.reserve(entries);
  const std::string value(200, 'v');
  for (uint64_t i = 0; i < entries; ++i) {
    keys.push_back(key_of(i));
    w->set(keys.back(), value, 0, 0);
  }
  const auto st = w->stats();
  std::vector<std::string> absent;
  for (int i = 0; i < 1000; ++i) absent.push_back(key_of(entries + 1 + i));

  Reader r;
  if (r.open(o.path, &why) != 0) {
    fprintf(stderr, "bench_shm_reader: %s\n", why.c_str());
    return 1;
  }
  attach_region(r);
  const double overhead = timer_overhead_ns();
  std::mt19937_64 rng(7);
  // Zipf ranks map to scattered keys, as popular keys are in a real table.
  std::vector<size_t> scatter(entries);
  for (size_t i = 0; i < entries; ++i) scatter[i] = i;
  std::shuffle(scatter.begin(), scatter.end(), rng);
  const Zipf zipf(entries, 0.99);
  std::vector<double> hit_med, hit_p99, zipf_med, zipf_p99, hot_med, hot_p99, miss_med, miss_p99, busy_med,
      busy_p99, avg_ns, tp1, tp2;
  for (int round = 0; round < rounds; ++round) {
    std::vector<size_t> order(200000);
    for (auto& x : order) x = rng() % entries;
    auto s = time_gets(r, int(order.size()), [&](int i) -> const std::string& { return keys[order[i]]; }, overhead,
                       ReadStatus::hit);
    hit_med.push_back(s.median_ns), hit_p99.push_back(s.p99_ns);
    std::vector<size_t> zorder(200000);
    for (auto& x : zorder) x = scatter[zipf(rng)];
    s = time_gets(r, int(zorder.size()), [&](int i) -> const std::string& { return keys[zorder[i]]; }, overhead,
                  ReadStatus::hit);
    zipf_med.push_back(s.median_ns), zipf_p99.push_back(s.p99_ns);
    s = time_gets(r, 200000, [&](int) -> const std::string& { return keys[42]; }, overhead, ReadStatus::hit);
    hot_med.push_back(s.median_ns), hot_p99.push_back(s.p99_ns);
    s = time_gets(r, 200000, [&](int i) -> const std::string& { return absent[i % absent.size()]; }, overhead,
                  ReadStatus::miss);
    miss_med.push_back(s.median_ns), miss_p99.push_back(s.p99_ns);

    // Average cost without the per-op timer: a batch over random keys.
    std::string buf(4096, '\0');
    auto t0 = Clock::now();
    for (size_t i = 0; i < order.size(); ++i) {
      const std::string& k = keys[order[i]];
      r.get(k.data(), k.size(), buf.data(), buf.size());
    }
    avg_ns.push_back(ns_since(t0) / double(order.size()));

    if (round % 2) {
      tp2.push_back(throughput(o.path, keys, 2, 1.0));
      tp1.push_back(throughput(o.path, keys, 1, 1.0));
    } else {
      tp1.push_back(throughput(o.path, keys, 1, 1.0));
      tp2.push_back(throughput(o.path, keys, 2, 1.0));
    }
    w->heartbeat();
  }

  // Last, because the rewrites turn over the log: readers of 64 hot keys
  // while this process (the writer) rewrites exactly those keys.
  for (int round = 0; round < rounds; ++round) {
    std::vector<std::string> hot(keys.begin(), keys.begin() + 64);
    int fds[2];
    if (pipe(fds) != 0) return 1;
    const pid_t child = fork();
    if (child == 0) {
      Reader cr;
      cr.open(o.path, &why);
      attach_region(cr);
      size_t i = 0;
      auto res = time_gets(cr, 200000, [&](int) -> const std::string& { return hot[i++ % hot.size()]; }, overhead,
                           ReadStatus::hit);
      (void)!write(fds[1], &res, sizeof res);
      _exit(0);
    }
    close(fds[1]);
    Summary during{};
    for (uint64_t rewrites = 0;; ++rewrites) {
      for (int i = 0; i < 64; ++i) w->set(hot[i], value, uint8_t(rewrites), 0);
      if (waitpid(child, nullptr, WNOHANG) == child) break;
    }
    if (read(fds[0], &during, sizeof during) != sizeof during) return 1;
    close(fds[0]);
    busy_med.push_back(during.median_ns), busy_p99.push_back(during.p99_ns);
    w->heartbeat();
  }
  const double dram = dram_latency_ns(st.segment_bytes);

  const auto st2 = w->stats();
  printf("nearcache shared-memory reader, %llu entries of 16 B key + 200 B value, %d rounds (medians of rounds)\n",
         (unsigned long long)st.entries, rounds);
  printf("%-44s %10s %10s\n", "", "median ns", "p99 ns");
  printf("%-44s %10.1f %10.1f\n", "get hit, random key (cache-cold bucket)", median(hit_med), median(hit_p99));
  printf("%-44s %10.1f %10.1f\n", "get hit, Zipf(0.99) keys", median(zipf_med), median(zipf_p99));
  printf("%-44s %10.1f %10.1f\n", "get hit, one hot key", median(hot_med), median(hot_p99));
  printf("%-44s %10.1f %10.1f\n", "get miss", median(miss_med), median(miss_p99));
  printf("%-44s %10.1f %10.1f\n", "get hit, writer rewriting the same keys", median(busy_med), median(busy_p99));
  printf("%-44s %10.1f\n", "get hit, random key, batch average ns", median(avg_ns));
  printf("timer overhead subtracted: %.1f ns; one dependent DRAM load here: %.1f ns (random cycle over %.0f MiB)\n",
         overhead, dram, double(st.segment_bytes) / 1048576);
  printf("throughput, random keys: 1 process %.2f M gets/s, 2 processes %.2f M gets/s, ratio %.2fx\n",
         median(tp1) / 1e6, median(tp2) / 1e6, median(tp2) / median(tp1));
  printf("target median hit <= 250 ns: Zipf keys %s, one hot key %s, uniformly random keys %s (%.1f DRAM loads)\n",
         median(zipf_med) <= 250 ? "met" : "NOT met", median(hot_med) <= 250 ? "met" : "NOT met",
         median(hit_med) <= 250 ? "met" : "NOT met", median(hit_med) / dram);
  printf("metadata per entry: index %.1f B + item header and padding %.1f B = %.1f B (target <= 32)\n",
         double(st.index_bytes) / double(st.entries), double(st.item_bytes - st.live_bytes) / double(st.entries),
         double(st.index_bytes + st.item_bytes - st.live_bytes) / double(st.entries));
  printf("segment %.1f MiB, data area %.1f MiB, live key+value %.1f MiB; reader busy answers %llu\n",
         double(st.segment_bytes) / 1048576, double(st.data_bytes) / 1048576, double(st.live_bytes) / 1048576,
         (unsigned long long)st2.reader_busy);
  w->remove();
  return 0;
}
