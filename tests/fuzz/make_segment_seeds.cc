// Writes small real segments (keys k0..k23, values of many sizes, some
// overwritten, evicted and expired, some negative; in some, the table was
// dropped (epoch) midway, and the header flags set) into a directory, as
// fuzz_segment seeds (layout 2).
#include <cstdio>
#include <fstream>
#include <random>
#include <string>

#include "writer.h"

using namespace nearcache::shm;

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  for (int seed = 0; seed < 8; ++seed) {
    WriterOptions o;
    o.path = dir + "/seed-" + std::to_string(seed) + ".seg.tmp";
    o.segment_bytes = 12288 + 4096 * (seed % 2);
    o.key_limit = 16;
    o.value_limit = 200;
    o.expected_item_bytes = 48;
    std::string why;
    auto w = Writer::create(o, &why);
    if (!w) {
      std::fprintf(stderr, "make_segment_seeds: %s\n", why.c_str());
      return 1;
    }
    std::mt19937 rng(seed);
    const int writes = 40 * (seed + 1);
    for (int i = 0; i < writes; ++i) {
      const std::string key = "k" + std::to_string(rng() % 24);
      if (seed % 2 && i % 7 == 0) w->set_negative(key, 0);
      else w->set(key, std::string(rng() % 200, char('a' + i % 26)), uint8_t(i), i % 5 ? 0 : 1 << 19);
      if (seed % 3 == 2 && i == writes / 2) w->drop_all();  // buckets of two epochs
    }
    w->set_authoritative(seed % 4 == 1);
    w.reset();
    std::ifstream in(o.path, std::ios::binary);
    std::ofstream out(dir + "/seed-" + std::to_string(seed) + ".seg", std::ios::binary);
    out << in.rdbuf();
    std::remove(o.path.c_str());
    std::remove((o.path + ".lock").c_str());
  }
  return 0;
}
