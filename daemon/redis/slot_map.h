// daemon/redis/slot_map.h — Redis Cluster's view of who serves which slot:
// the replies of INFO cluster, CLUSTER SHARDS (Redis 7) and CLUSTER SLOTS
// (older servers) turned into a slot -> master table, and the redirection
// errors (MOVED, ASK, TRYAGAIN, CLUSTERDOWN) a node answers with.
//
// Only masters are kept: this cache reads and writes on masters (replicas
// would answer reads with MOVED anyway, and tracking must be on the node
// that executes the writes).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "redis/url.h"

struct redisReply;

namespace nearcache::redis {

struct SlotMap {
  std::vector<HostPort> masters;  // each once
  std::vector<int> owner;         // kSlots entries: index into masters, -1 = unserved
  // Slots with an owner.
  size_t covered() const;
  // The index of `m` in masters, or -1.
  int find(const HostPort& m) const;
  // Adds `m` if new; its index.
  int add(const HostPort& m);
};

// INFO (cluster section) says cluster_enabled:1.
bool cluster_enabled(std::string_view info);

// A CLUSTER SHARDS reply: each shard's master (role master, health online
// preferred over others; endpoint, else ip) with its slot ranges. false + *err
// when the reply has another shape (an older server answers an error first).
// A node that does not know its address (empty, "?") is `asked`, the host
// the reply came from (what Redis asks clients to do). A node's address is its
// `tls-port` for a client on TLS (`tls`), else its `port`: a node with both
// (tls-cluster) serves each on its own port, and a TLS-only node reports port 0.
bool parse_cluster_shards(const redisReply* r, const std::string& asked, bool tls, SlotMap* out,
                          std::string* err);
// A CLUSTER SLOTS reply: [start, end, [master ip, port, ...], replicas...].
bool parse_cluster_slots(const redisReply* r, const std::string& asked, SlotMap* out, std::string* err);

struct Redirect {
  enum Kind { none, moved, ask, tryagain, clusterdown } kind = none;
  uint32_t slot = 0;
  HostPort to;  // moved, ask
};
// An error reply's text: "MOVED 3999 10.0.0.2:6381", "ASK 3999 host:port",
// "TRYAGAIN ...", "CLUSTERDOWN ..."; anything else is none.
Redirect parse_redirect(std::string_view error);
const char* redirect_name(Redirect::Kind k);

}  // namespace nearcache::redis
