// daemon/engine/locks.h — the host's locks (ops LOCK, UNLOCK, LOCK_EXTEND,
// LOCK_QUERY without a Redis tier): a key space of their own, apart from the
// table and the leases, each lock a holder's token and an expiry. Release and
// extend compare the token first (redis-py's Lock semantics), and a lock never
// ends with a connection: it ends when released or when its TTL passes.
// With a Redis tier locks are decided in Redis (engine_redis.cc) and this
// table is not used. Loop thread only.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

namespace nearcache::daemon {

class Locks {
 public:
  // Expiries are absolute ms on the engine's clock, never 0 (the caller bounds them).
  bool acquire(std::string_view key, std::string_view token, uint64_t expiry, uint64_t now);
  bool release(std::string_view key, std::string_view token, uint64_t now);
  // A new expiry for a lock `token` holds: now + ms (replace) or its expiry + ms,
  // at most `ceiling`.
  bool extend(std::string_view key, std::string_view token, uint64_t ms, bool replace, uint64_t ceiling,
              uint64_t now);
  // The holder's token and expiry, if the lock is held.
  bool query(std::string_view key, uint64_t now, std::string* token, uint64_t* expiry);
  size_t held(uint64_t now);

 private:
  struct Held {
    std::string token;
    uint64_t expiry;
  };
  void purge(uint64_t now);  // drops the locks whose TTL passed
  void set_expiry(const std::string& key, Held& h, uint64_t expiry);
  std::unordered_map<std::string, Held> locks_;
  std::set<std::pair<uint64_t, std::string>> by_expiry_;
};

}  // namespace nearcache::daemon
