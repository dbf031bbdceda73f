// tests/fuzz/fuzz_protocol.cc — libFuzzer target for the daemon's frame
// scanner and dispatcher: arbitrary bytes from two clients, fed in chunks of
// varying size, against a real table. Every reply must be one well-formed
// msgpack array [id|nil, code, ...]; nothing may crash, leak or hang.
//
// Input layout: byte 0 = chunk size for feeding (1..256), byte 1 = flags
// (bit 0: second client gets every other chunk; bit 1: shut down at the end;
// bit 2: advance the clock between chunks), then the byte stream.
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <msgpack.hpp>
#include <string>

#include "engine/engine.h"
#include "writer.h"

using namespace nearcache::daemon;
namespace shm = nearcache::shm;

namespace {

uint64_t fake_now = 1000000;
uint64_t fake_clock() { return fake_now; }

std::unique_ptr<shm::Writer> writer;
Config cfg;

void check_replies(Session* s) {
  const std::string& b = s->out.bytes;
  size_t off = 0;
  while (off < b.size()) {
    msgpack::object_handle h = msgpack::unpack(b.data(), b.size(), off);  // throws (and aborts) on junk
    const msgpack::object& o = h.get();
    if (o.type != msgpack::type::ARRAY || o.via.array.size < 2) abort();
    const msgpack::object& id = o.via.array.ptr[0];
    if (id.type != msgpack::type::NIL && id.type != msgpack::type::POSITIVE_INTEGER) abort();
    if (o.via.array.ptr[1].type != msgpack::type::POSITIVE_INTEGER) abort();
    const uint64_t code = o.via.array.ptr[1].via.u64;
    // Errors carry a message naming the problem.
    if (code >= 16 && (o.via.array.size != 3 || o.via.array.ptr[2].type != msgpack::type::STR)) abort();
  }
  s->out.bytes.clear();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  static std::string dir = [] {
    std::string tmpl = (std::filesystem::temp_directory_path() / "nearcache-fuzz-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) abort();
    return tmpl;
  }();
  shm::WriterOptions o;
  o.path = dir + "/seg";
  o.segment_bytes = 2 << 20;
  o.key_limit = 64;
  o.value_limit = 16 << 10;
  o.expected_item_bytes = 64;
  std::string why;
  writer = shm::Writer::create(o, &why);
  if (!writer) abort();
  writer->set_clock(fake_clock);
  // The names can go at once: the mapping stays valid and nothing is left behind.
  writer->remove();
  std::filesystem::remove_all(dir);
  cfg.key_limit = o.key_limit;
  cfg.value_limit = o.value_limit;
  cfg.max_frame_bytes = 40 << 10;
  cfg.max_outstanding = 64;
  cfg.max_output_bytes = 1 << 20;
  cfg.max_lease_ms = 1000;
  cfg.max_wait_ms = 1000;
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const size_t chunk = size_t(data[0]) + 1;
  const uint8_t flags = data[1];
  data += 2;
  size -= 2;

  Engine engine(writer.get(), cfg);
  engine.set_clock(fake_clock);
  Session a, b;
  a.id = 1;
  b.id = 2;
  engine.attach(&a);
  engine.attach(&b);
  for (size_t off = 0, n = 0; off < size; off += chunk, ++n) {
    Session* s = (flags & 1) && (n & 1) ? &b : &a;
    const size_t len = std::min(chunk, size - off);
    if (!s->closing && !s->kill) {
      s->in.append(data + off, len);
      engine.feed(s);
    }
    if (flags & 4) fake_now += data[off] * 10;
    engine.clear_work(100000);
    engine.on_deadlines();
    check_replies(&a);
    check_replies(&b);
  }
  while (!engine.clear_work(100000)) {
  }
  fake_now += 2000;  // every lease and wait deadline passes
  engine.on_deadlines();
  if (flags & 2) engine.begin_shutdown();
  check_replies(&a);
  check_replies(&b);
  engine.detach(&a);
  engine.detach(&b);
  if (engine.next_deadline() != UINT64_MAX) abort();  // leases die with their connections
  return 0;
}
