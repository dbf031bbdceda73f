// Writes small real segments (keys k0..k23, values of many sizes, some
// overwritten, evicted and expired) into a directory, as fuzz_segment seeds.
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
    for (int i = 0; i < 40 * (seed + 1); ++i) {
      const std::string key = "k" + std::to_string(rng() % 24);
      w->set(key, std::string(rng() % 200, char('a' + i % 26)), uint8_t(i), i % 5 ? 0 : 1 << 19);
    }
    w.reset();
    std::ifstream in(o.path, std::ios::binary);
    std::ofstream out(dir + "/seed-" + std::to_string(seed) + ".seg", std::ios::binary);
    out << in.rdbuf();
    std::remove(o.path.c_str());
    std::remove((o.path + ".hints").c_str());
    std::remove((o.path + ".lock").c_str());
  }
  return 0;
}
