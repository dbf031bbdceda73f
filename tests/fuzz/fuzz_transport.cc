// tests/fuzz/fuzz_transport.cc — libFuzzer target for the Redis link's input
// path: bytes as if read from the socket, through the transport (plain, or a
// client SSL in its handshake reading them from its memory BIO), into the
// reply parser (hiredis's redisReader with the max_reply_bytes bound) and the
// Link's FIFO matching (a reply per pending command, pub/sub messages aside).
// Nothing may crash, leak or hang; a parse error ends the stream as the Link
// would.
//
// Input layout: byte 0 = flags (bit 0: TLS; bit 1: a 64-byte reply bound;
// bit 2: a SUBSCRIBE was sent), byte 1 = chunk size for feeding (1..256),
// then the byte stream.
#include <hiredis/hiredis.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "redis/replies.h"
#include "redis/tls.h"
#include "redis/transport.h"

using namespace nearcache::redis;

namespace {

struct Sink {
  ReplyParser parser;
  bool subscribed = false;
  uint64_t pending = 100000;  // commands awaiting a reply
  bool dead = false;
  explicit Sink(uint64_t bound) : parser(bound) {}
};

void on_data(void* ctx, const char* p, size_t n) {
  auto* s = static_cast<Sink*>(ctx);
  if (s->dead) return;
  std::string err;
  if (!s->parser.feed(p, n, &err)) {
    s->dead = true;
    return;
  }
  for (;;) {
    redisReply* r = nullptr;
    if (!s->parser.next(&r, &err)) {
      s->dead = true;
      return;
    }
    if (!r) break;
    if (!(s->subscribed && is_pubsub(r))) {
      if (s->pending == 0) s->dead = true;  // a reply without a command: the Link fails the connection
      else s->pending--;
    }
    freeReplyObject(r);
    if (s->dead) return;
  }
  if (!s->parser.within_bound(&err)) s->dead = true;
}

void on_failed(void* ctx, const std::string& why) {
  if (why.empty()) abort();  // every failure has a reason
  static_cast<Sink*>(ctx)->dead = true;
}

const std::shared_ptr<TlsClient>& tls() {
  static std::shared_ptr<TlsClient> c = [] {
    std::string err;
    TlsOptions o;
    o.verify = true;
    o.server_name = "redis.example";
    auto t = TlsClient::create(o, &err);
    if (!t) abort();
    return t;
  }();
  return c;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const uint8_t flags = data[0];
  const size_t chunk = size_t(data[1] % 256) + 1;
  data += 2, size -= 2;
  Sink sink((flags & 2) ? 64 : 0);
  sink.subscribed = flags & 4;
  TransportTarget target;
  if (flags & 1) {
    target.tls = tls();
    target.host = "redis.example";
  }
  TransportHandlers h;
  h.ctx = &sink;
  h.data = on_data;
  h.failed = on_failed;
  std::string err;
  Transport* t = transport_detached_for_test(target, h, &err);
  if (!t) abort();
  for (size_t off = 0; off < size && !sink.dead; off += chunk)
    transport_feed_for_test(t, reinterpret_cast<const char*>(data) + off, std::min(chunk, size - off));
  transport_free_detached_for_test(t);
  return 0;
}
