// tests/fuzz/fuzz_cluster.cc — libFuzzer target for what a Redis Cluster node
// tells the daemon: RESP replies (through the same bounded reply parser the
// links use) read as CLUSTER SHARDS, as CLUSTER SLOTS and as INFO cluster,
// and error texts read as MOVED/ASK/TRYAGAIN/CLUSTERDOWN redirections. A
// hostile or broken node may send anything: nothing may crash, leak or hang,
// and a slot map that parses names only slots in range and masters it holds.
//
// Input layout: byte 0 = which reading (0: replies, 1: a redirect text), then
// the bytes.
#include <hiredis/hiredis.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "redis/replies.h"
#include "redis/slot_map.h"

using namespace nearcache::redis;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const char* p = reinterpret_cast<const char*>(data + 1);
  const size_t n = size - 1;
  if (data[0] & 1) {
    const Redirect r = parse_redirect(std::string_view(p, n));
    if (r.kind != Redirect::none && r.kind != Redirect::tryagain && r.kind != Redirect::clusterdown &&
        r.slot >= 16384)
      abort();
    (void)redirect_name(r.kind);
    return 0;
  }
  ReplyParser parser(1 << 20);
  std::string err;
  if (!parser.feed(p, n, &err)) return 0;
  for (int i = 0; i < 64; ++i) {
    redisReply* r = nullptr;
    if (!parser.next(&r, &err) || r == nullptr) break;
    for (int how = 0; how < 3; ++how) {  // CLUSTER SHARDS over TLS, without; CLUSTER SLOTS
      SlotMap m;
      std::string why;
      const bool ok = how < 2 ? parse_cluster_shards(r, "10.0.0.1:7000", how == 0, &m, &why)
                              : parse_cluster_slots(r, "10.0.0.1:7000", &m, &why);
      if (ok && m.covered() > 16384) abort();
    }
    if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS)
      (void)cluster_enabled(std::string_view(r->str, r->len));
    if (r->type == REDIS_REPLY_ERROR) (void)parse_redirect(std::string_view(r->str, r->len));
    freeReplyObject(r);
  }
  return 0;
}
