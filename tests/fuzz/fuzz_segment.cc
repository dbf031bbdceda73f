// libFuzzer target: the segment reader over arbitrary bytes.
//
// The input is a segment image. Magic, layout version, size, state and
// heartbeat are fixed up so that mutations get past the first checks and
// reach geometry validation and the table walk; everything else (geometry,
// buckets, items) is the fuzzer's. Lookups use the keys the seed segments
// were written with (make_segment_seeds.cc) plus one taken from the input;
// the epochs, flags and item state bits (negative entries) of layout 2 are
// the fuzzer's too, except that `suspended` (which answers every lookup
// without reading the table) is cleared unless the first byte asks for it.
// Hits are recorded into a hit region, as a client's are.
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "hits.h"
#include "reader.h"

using namespace nearcache::shm;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  constexpr uint64_t kNow = 1 << 20;
  const size_t n = (std::max<size_t>(size, kHeaderBytes) + 7) / 8 * 8;
  std::vector<uint64_t> img(n / 8, 0);  // exact size: ASan sees any overread
  std::memcpy(img.data(), data, size);
  auto* h = reinterpret_cast<Header*>(img.data());
  h->magic = kMagic;
  h->layout_version = kLayoutVersion;
  h->header_bytes = kHeaderBytes;
  h->segment_bytes = n;
  h->state = uint32_t(SegmentState::running);
  h->heartbeat_ms = kNow;
  h->heartbeat_grace_ms = 1000;
  if (size == 0 || !(data[0] & 1)) h->flags &= ~kFlagSuspended;

  static std::unique_ptr<HitRegion> region = HitRegion::create(nullptr);
  Reader r;
  std::string why;
  if (r.attach(img.data(), n, &why) != 0) return 0;
  r.attach_hits(region.get());
  char buf[2048];
  for (int i = 0; i < 24; ++i) {
    const std::string key = "k" + std::to_string(i);
    r.get_at(key.data(), key.size(), buf, sizeof buf, kNow);
  }
  const size_t klen = size > 32 ? data[size - 1] % 32 : 0;
  r.get_at(data + size - klen, klen, buf, sizeof buf, kNow);
  return 0;
}
