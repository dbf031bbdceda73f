// bench/shm_hit_ratio.cc — hit ratio of the real table against an exact LRU
// with the same byte budget, on Zipf-distributed requests, in one run.
//
// The table is driven the way nearcache is used: a request is a reader
// lookup (which records the access in the process's hit region, as a
// client's hit does); on a miss the writer stores the value. Every
// --poll-every requests (default 1024) the writer takes the region's new
// hits as the daemon's timer does (HitSource::poll, then note_hits): the
// region's ring holds 4096, so none is lost at this rate. "table, no hints"
// repeats the run with a reader that has no region, to show what the hints
// are worth. The LRU is charged the same bytes per item as the table
// (header, key, value, padding) and gets the table's whole data area.
//
// 10^6 keys, values of 50..4000 bytes (log-uniform, fixed per key), Zipf
// alpha 0.9 and 1.0, cache = 1% and 10% of the key space's bytes.
//
// Usage: bench_shm_hit_ratio [--keys N] [--requests R] [--dir DIR] [--poll-every N]
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <list>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "hits.h"
#include "reader.h"
#include "writer.h"
#include "zipf.h"

using namespace nearcache::shm;

namespace {

size_t g_poll_every = 1024;

class Lru {
 public:
  explicit Lru(uint64_t budget) : budget_(budget) {}
  bool access(uint32_t key, uint64_t bytes) {
    auto it = map_.find(key);
    if (it != map_.end()) {
      order_.splice(order_.begin(), order_, it->second);
      return true;
    }
    while (used_ + bytes > budget_ && !order_.empty()) {
      used_ -= order_.back().second;
      map_.erase(order_.back().first);
      order_.pop_back();
    }
    order_.emplace_front(key, bytes);
    map_[key] = order_.begin();
    used_ += bytes;
    return false;
  }

 private:
  uint64_t budget_, used_ = 0;
  std::list<std::pair<uint32_t, uint64_t>> order_;
  std::unordered_map<uint32_t, std::list<std::pair<uint32_t, uint64_t>>::iterator> map_;
};

struct Workload {
  std::vector<std::string> keys;
  std::vector<uint32_t> sizes;
  std::vector<uint32_t> requests;  // key ids
};

struct Result {
  double table, table_no_hints, lru;
  uint64_t data_bytes;
};

double run_table(const Workload& wl, const std::string& path, uint64_t segment_bytes, uint32_t avg_item,
                 bool hints, size_t warmup, uint64_t* data_bytes) {
  WriterOptions o;
  o.path = path;
  o.segment_bytes = segment_bytes;
  o.value_limit = 4096;
  o.key_limit = 64;
  o.expected_item_bytes = avg_item;
  std::string why;
  auto w = Writer::create(o, &why);
  if (!w) {
    fprintf(stderr, "bench_shm_hit_ratio: %s\n", why.c_str());
    exit(1);
  }
  *data_bytes = w->stats().data_bytes;
  Reader r;
  if (r.open(path, &why) != 0) {
    fprintf(stderr, "bench_shm_hit_ratio: %s\n", why.c_str());
    exit(1);
  }
  std::unique_ptr<HitRegion> region;
  std::unique_ptr<HitSource> source;
  if (hints) {
    region = HitRegion::create(&why);
    if (!region || HitSource::adopt(dup(region->fd()), 0, &source, &why) != 0) {
      fprintf(stderr, "bench_shm_hit_ratio: %s\n", why.c_str());
      exit(1);
    }
    r.attach_hits(region.get());
  }
  std::vector<uint32_t> ways;
  uint64_t poll_clock = 0;
  std::string value(4096, 'v'), buf(4096, '\0');
  uint64_t hits = 0, counted = 0;
  for (size_t i = 0; i < wl.requests.size(); ++i) {
    const uint32_t id = wl.requests[i];
    const std::string& k = wl.keys[id];
    const bool hit = r.get(k.data(), k.size(), buf.data(), buf.size()).status == ReadStatus::hit;
    if (!hit) w->set(k, std::string_view(value.data(), wl.sizes[id]), 0, 0);
    if (i >= warmup) counted++, hits += hit;
    if (i % 65536 == 0) w->heartbeat();
    if (source && i % g_poll_every == 0) {
      HitDeltas d;
      ways.clear();
      source->poll(w->generation(), w->way_index_limit(), poll_clock += 1000, &ways, &d);
      w->note_hits(ways.data(), ways.size());
    }
  }
  const auto s = w->stats();
  if (s.index_evictions > s.evictions / 100)
    fprintf(stderr, "note: %llu of %llu evictions made room in the index, not the data area\n",
            (unsigned long long)s.index_evictions, (unsigned long long)s.evictions);
  w->remove();
  return double(hits) / double(counted);
}

double run_lru(const Workload& wl, uint64_t budget, size_t warmup) {
  Lru lru(budget);
  uint64_t hits = 0, counted = 0;
  for (size_t i = 0; i < wl.requests.size(); ++i) {
    const uint32_t id = wl.requests[i];
    const bool hit = lru.access(id, item_bytes(wl.keys[id].size(), wl.sizes[id]));
    if (i >= warmup) counted++, hits += hit;
  }
  return double(hits) / double(counted);
}

}  // namespace

int main(int argc, char** argv) {
  size_t nkeys = 1000000, nrequests = 8000000;
  std::string dir = "/dev/shm";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--keys")) nkeys = std::strtoull(argv[i + 1], nullptr, 10);
    if (!strcmp(argv[i], "--requests")) nrequests = std::strtoull(argv[i + 1], nullptr, 10);
    if (!strcmp(argv[i], "--dir")) dir = argv[i + 1];
    if (!strcmp(argv[i], "--poll-every")) g_poll_every = std::max<size_t>(1, std::strtoull(argv[i + 1], nullptr, 10));
  }
  std::mt19937_64 rng(2024);
  Workload wl;
  uint64_t total_bytes = 0;
  for (size_t i = 0; i < nkeys; ++i) {
    wl.keys.push_back("key:" + std::to_string(i));
    const double lo = std::log(50.0), hi = std::log(4000.0);
    wl.sizes.push_back(uint32_t(std::exp(lo + (hi - lo) * std::uniform_real_distribution<double>(0, 1)(rng))));
    total_bytes += item_bytes(wl.keys.back().size(), wl.sizes.back());
  }
  const uint32_t avg_item = uint32_t(total_bytes / nkeys);
  // Popularity is independent of size: ranks map to a random permutation of keys.
  std::vector<uint32_t> perm(nkeys);
  for (size_t i = 0; i < nkeys; ++i) perm[i] = uint32_t(i);
  std::shuffle(perm.begin(), perm.end(), rng);

  printf("hit ratio: nearcache table (S3-FIFO over two logs, reader hits via a hit region polled every %zu requests) vs exact LRU, same bytes\n", g_poll_every);
  printf("%zu keys, values 50..4000 B log-uniform (mean item %u B), %zu requests (first 25%% warm-up)\n", nkeys,
         avg_item, nrequests);
  printf("%-6s %-6s %12s %10s %10s %10s %12s\n", "alpha", "cache", "budget MiB", "table", "no hints", "LRU",
         "table - LRU");
  const std::string path = dir + "/nearcache-hitratio-" + std::to_string(getpid());
  bool all_ok = true;
  for (double alpha : {0.9, 1.0}) {
    const Zipf zipf(nkeys, alpha);
    wl.requests.resize(nrequests);
    for (auto& r : wl.requests) r = perm[zipf(rng)];
    for (double share : {0.01, 0.10}) {
      // A segment whose data area is about `share` of all items' bytes.
      const uint64_t budget = uint64_t(double(total_bytes) * share);
      const uint64_t segment = budget + budget / avg_item * 16 + (1 << 20);
      uint64_t data_bytes = 0;
      const size_t warmup = nrequests / 4;
      const double t = run_table(wl, path, segment, avg_item, true, warmup, &data_bytes);
      const double t0 = run_table(wl, path, segment, avg_item, false, warmup, &data_bytes);
      const double l = run_lru(wl, data_bytes, warmup);
      all_ok &= t >= l;
      printf("%-6.1f %-5.0f%% %12.1f %9.2f%% %9.2f%% %9.2f%% %+11.2f%%\n", alpha, share * 100,
             double(data_bytes) / 1048576, t * 100, t0 * 100, l * 100, (t - l) * 100);
      fflush(stdout);
    }
  }
  printf("target (table >= LRU in every row): %s\n", all_ok ? "met" : "NOT met");
  return 0;
}
