// daemon/engine/engine_waits.h — the Engine's records of client requests waiting
// for Redis (engine_redis.cc); private to the daemon's core.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "engine/engine.h"

namespace nearcache::daemon {

using ManyResults = std::vector<std::optional<std::pair<std::string, uint8_t>>>;

// What an ADD, INCR/DECR or LEASE needs after Redis answered, including when
// its client is gone or was answered without Redis (the callback still
// applies the outcome to the table, or gives back a lease nobody took).
struct Engine::AtomicCtx {
  WaitKind kind = wait_add;
  std::string key, value;
  uint8_t flags = 0;
  uint64_t expiry = 0;
  int64_t delta = 0;
  bool decr = false;
  uint64_t token = 0, lease_ms = 0, wait_deadline = 0;
  Snap snap;
  bool tracked = false;
};

struct ManyState {
  ManyResults results;
  size_t remaining = 0;
};

struct Engine::RedisWait {
  uint64_t id = 0, session = 0, req = 0, deadline = 0;
  WaitKind kind = wait_get;
  std::string key;
  uint64_t expiry = 0;                // TOUCH
  std::shared_ptr<AtomicCtx> ctx;     // ADD, INCR, LEASE
  uint64_t tier_wait = 0;             // LEASE polling another host's lease
  std::shared_ptr<ManyState> many;    // GET_MANY
};

}  // namespace nearcache::daemon
