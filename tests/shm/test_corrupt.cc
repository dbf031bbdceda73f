// Readers over corrupt segments: random bytes, bit-flipped and truncated real
// segments, lying geometry. A reader must refuse the segment or answer every
// lookup (hit, miss, busy, unavailable), in bounded time, without reading
// outside the image. Images are heap buffers of their exact size, so the
// AddressSanitizer build (make asan) catches any out-of-bounds read.
#include <catch2/catch.hpp>
#include <cstring>
#include <fstream>
#include <random>

#include "shm_fixture.h"
#include "table_view.h"

using namespace nearcache::shm;

namespace {

using Image = std::vector<uint64_t>;  // 8-aligned, exact size

constexpr uint64_t kNow = 1000000;

// A real segment with entries of many sizes, read back as bytes.
Image real_segment(std::vector<std::string>* keys) {
  nctest::TempDir d;
  WriterOptions o;
  o.path = d.file("segment");
  o.segment_bytes = 64 << 10;
  o.key_limit = 32;
  o.value_limit = 512;
  o.expected_item_bytes = 64;
  auto w = nctest::make_writer(o);
  std::mt19937_64 rng(7);
  for (int i = 0; i < 3000; ++i) {  // enough to wrap the logs and fill buckets
    std::string k = "key-" + std::to_string(rng() % 600);
    REQUIRE(w->set(k, std::string(rng() % 300, 'v'), uint8_t(i), i % 3 ? 0 : kNow + 100) == Status::ok);
  }
  for (int i = 0; i < 600; ++i) keys->push_back("key-" + std::to_string(i));
  std::ifstream f(o.path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  Image img(bytes.size() / 8);
  std::memcpy(img.data(), bytes.data(), img.size() * 8);
  return img;
}

Header* header(Image& img) { return reinterpret_cast<Header*>(img.data()); }

// Keeps what lets corruption reach the table walk: magic, version, size,
// state and a fresh heartbeat.
void fix_up(Image& img) {
  Header* h = header(img);
  h->magic = kMagic;
  h->layout_version = kLayoutVersion;
  h->header_bytes = kHeaderBytes;
  h->segment_bytes = img.size() * 8;
  h->state = uint32_t(SegmentState::running);
  h->heartbeat_ms = kNow;
  h->heartbeat_grace_ms = 1000;
}

struct Probe {
  int opened = 0, hits = 0, lookups = 0;
};

void probe(Image& img, const std::vector<std::string>& keys, Probe* p) {
  Reader r;
  std::string why;
  if (r.attach(img.data(), img.size() * 8, &why) != 0) return;
  p->opened++;
  std::string buf(4096, '\0');
  for (const auto& k : keys) {
    auto res = r.get_at(k.data(), k.size(), buf.data(), buf.size(), kNow);
    p->lookups++;
    p->hits += res.status == ReadStatus::hit;
    REQUIRE(res.retries <= uint32_t(Reader::kMaxRetries) + 1);
    if (res.status == ReadStatus::hit) REQUIRE(res.value_len <= buf.size());
  }
  // The inspection walks (`nearcache memory`, key_stats) over the same image.
  const TableView view(r);
  BucketEntries b;
  std::string key;
  for (uint32_t i = 0; i < view.bucket_count(); ++i) {
    if (!view.read_bucket(i, kNow, &b)) continue;
    REQUIRE(b.entries.size() <= kWaysPerBucket);
    for (const EntryInfo& e : b.entries) REQUIRE(uint64_t(e.key_off) + e.key_len <= b.keys.size());
  }
  for (uint64_t wi = 0; wi < view.way_index_limit() + 8; ++wi) view.key_at(uint32_t(wi), kNow, &key);
}

}  // namespace

TEST_CASE("an intact real segment reads back") {
  std::vector<std::string> keys;
  Image img = real_segment(&keys);
  fix_up(img);
  Probe p;
  probe(img, keys, &p);
  CHECK(p.opened == 1);
  CHECK(p.hits > 50);
}

TEST_CASE("random bytes, with and without a valid header, never crash a reader") {
  std::mt19937_64 rng(11);
  std::vector<std::string> keys;
  for (int i = 0; i < 64; ++i) keys.push_back("key-" + std::to_string(i));
  Probe p;
  for (int round = 0; round < 400; ++round) {
    Image img((4096 + rng() % 60000) / 8);
    for (auto& w : img) w = rng();
    if (round % 2) {
      fix_up(img);
      // Plausible geometry so the walk runs over random buckets and items.
      Header* h = header(img);
      h->buckets_offset = kHeaderBytes;
      h->bucket_count = 1 + rng() % 16;
      h->bucket_ways = kWaysPerBucket;
      h->data_offset = kHeaderBytes + h->bucket_count * kBucketBytes;
      h->data_offset = (h->data_offset + 63) / 64 * 64;
      if (h->data_offset + 64 > img.size() * 8) continue;
      h->data_bytes = (img.size() * 8 - h->data_offset) / 8 * 8;
      h->key_limit = 64;
      h->value_limit = uint32_t(h->data_bytes);
    }
    probe(img, keys, &p);
  }
  CHECK(p.opened > 100);
}

TEST_CASE("bit-flipped real segments never crash a reader") {
  std::vector<std::string> keys;
  const Image pristine = real_segment(&keys);
  std::mt19937_64 rng(13);
  const Header* h = reinterpret_cast<const Header*>(pristine.data());
  const uint64_t index_begin = h->buckets_offset, index_bytes = h->data_offset - h->buckets_offset;
  Probe p;
  for (int round = 0; round < 1500; ++round) {
    Image img = pristine;
    const int flips = 1 + int(rng() % 64);
    for (int i = 0; i < flips; ++i) {
      // Half the flips land in the index, where they redirect the walk.
      const bool in_index = rng() % 2;
      const uint64_t byte = in_index ? index_begin + rng() % index_bytes : rng() % (img.size() * 8);
      const uint64_t bit = byte * 8 + rng() % 8;
      reinterpret_cast<unsigned char*>(img.data())[bit / 8] ^= uint8_t(1u << (bit % 8));
    }
    fix_up(img);
    probe(img, keys, &p);
  }
  CHECK(p.opened > 1000);
  CHECK(p.lookups > 100000);
}

TEST_CASE("truncated real segments are refused, or read within what remains") {
  std::vector<std::string> keys;
  const Image pristine = real_segment(&keys);
  std::mt19937_64 rng(17);
  Probe refused, walked;
  for (int round = 0; round < 300; ++round) {
    Image img(pristine.begin(), pristine.begin() + 512 + rng() % (pristine.size() - 512));
    fix_up(img);
    probe(img, keys, &refused);  // geometry now exceeds the size: refused
    // Pretend the data area ends where the image does: the walk meets items
    // whose offsets and lengths point past the end.
    Header* h = header(img);
    if (h->data_offset + 64 < img.size() * 8) {
      h->data_bytes = (img.size() * 8 - h->data_offset) / 8 * 8;
      h->value_limit = std::min<uint64_t>(h->value_limit, h->data_bytes);
      probe(img, keys, &walked);
    }
  }
  CHECK(refused.opened == 0);
  CHECK(walked.opened > 100);
}

TEST_CASE("lying geometry is refused at open") {
  std::vector<std::string> keys;
  const Image pristine = real_segment(&keys);
  std::string why;
  auto refused = [&](auto&& mutate) {
    Image img = pristine;
    fix_up(img);
    mutate(*header(img));
    Reader r;
    return r.attach(img.data(), img.size() * 8, &why) != 0;
  };
  CHECK(refused([](Header& h) { h.bucket_count = 0; }));
  CHECK(refused([](Header& h) { h.bucket_count = UINT32_MAX; }));
  CHECK(refused([](Header& h) { h.bucket_ways = 8; }));
  CHECK(refused([](Header& h) { h.buckets_offset = 8; }));
  CHECK(refused([](Header& h) { h.buckets_offset = UINT64_MAX - 511; }));  // found by fuzz_segment: offset + size wrapped
  CHECK(refused([](Header& h) { h.buckets_offset = h.segment_bytes; }));
  CHECK(refused([](Header& h) { h.data_offset = UINT64_MAX - 63; }));
  CHECK(refused([](Header& h) { h.data_bytes = UINT64_MAX - 7; }));
  CHECK(refused([](Header& h) { h.data_bytes += 8; }));
  CHECK(refused([](Header& h) { h.key_limit = 0; }));
  CHECK(refused([](Header& h) { h.value_limit = uint32_t(h.data_bytes + 1); }));
  CHECK(refused([](Header& h) { h.segment_bytes += 4096; }));
  CHECK(refused([](Header& h) { h.magic ^= 1; }));
  Reader r;
  Image img = pristine;
  fix_up(img);
  header(img)->layout_version = kLayoutVersion + 1;
  CHECK(r.attach(img.data(), img.size() * 8, &why) == EPROTONOSUPPORT);
  CHECK(why.find("layout version") != std::string::npos);
}
