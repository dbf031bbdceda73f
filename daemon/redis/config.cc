// daemon/redis/config.cc — see config.h.
#include "redis/config.h"

namespace nearcache::redis {

const std::vector<OptionRow>& redis_options() {
  static const std::vector<OptionRow> rows = {
      {"redis_url", "secret", "", false,
       "Redis shared by the hosts: redis://[user:password@]host[:port][/db] or "
       "unix://[user:password@]/path[?db=N]. Empty: no Redis tier. rediss:// (TLS) is not supported "
       "(hiredis 0.14); use a local TLS proxy."},
      {"redis_prefix", "string", "nearcache:", false,
       "Prefix of every key this cache writes in Redis (the Redis key is prefix + cache key). CLEAR removes "
       "keys under it with SCAN + UNLINK; other hosts' near tiers are invalidated for keys under it."},
      {"redis_connect_timeout_ms", "count", "1000", false,
       "Time allowed to resolve the host name, connect, authenticate and set up a Redis connection."},
      {"redis_command_timeout_ms", "count", "1000", false,
       "Time allowed for one Redis reply. A read-through that times out is a miss; a timeout closes the "
       "connection (its state is unknown), which then reconnects with backoff."},
      {"redis_queue_max_entries", "count", "100000", false,
       "Write-behind queue bound in operations. When full, a new operation is dropped, counted and logged "
       "(a newer write to a queued key turns the queued one into a delete)."},
      {"redis_queue_max_bytes", "size", "64M", false,
       "Write-behind queue bound in bytes (keys, values and about 64 bytes per operation)."},
      {"redis_local_ttl_max_ms", "count", "300000", false,
       "Ceiling on the local TTL of a value read from Redis; bounds staleness should an invalidation be "
       "lost. 0: Redis's TTL as is."},
      {"redis_reconnect_min_ms", "count", "100", false, "First delay before reconnecting to Redis; doubled after "
       "each failure up to redis_reconnect_max_ms."},
      {"redis_reconnect_max_ms", "count", "10000", false, "Longest delay between reconnection attempts."},
      {"redis_reconnect_jitter_percent", "count", "50", false,
       "Each reconnect delay is shortened by a random 0 to this percent, so hosts do not reconnect in step."},
      {"redis_drain_timeout_ms", "count", "5000", false,
       "On SIGTERM, how long to keep flushing the write-behind queue to Redis before exiting; what is left "
       "is logged as lost."},
      {"redis_heartbeat_ms", "count", "1000", false,
       "Period of the invalidation link check: a message published on the data connection must arrive on "
       "the invalidation connection within 3 periods, or the link is declared lost (local entries flushed)."},
      {"redis_lease_poll_min_ms", "count", "10", false,
       "A LEASE waiting for another host's lease re-checks Redis after this delay, doubling ..."},
      {"redis_lease_poll_max_ms", "count", "250", false,
       "... up to this; invalidations of the key or the lease wake it earlier."},
      {"redis_down", "string", "local", false,
       "What ADD, INCR/DECR and LEASE do while Redis is unreachable: local (decide on this host; STATUS "
       "shows the cache degraded; another host may decide differently) or error (answer UNAVAILABLE)."},
  };
  return rows;
}

bool parse_down_policy(const std::string& s, DownPolicy* out, std::string* err) {
  if (s == "local") return *out = DownPolicy::local, true;
  if (s == "error") return *out = DownPolicy::error, true;
  *err = "redis_down must be local or error (got \"" + s + "\")";
  return false;
}

const char* down_policy_name(DownPolicy p) { return p == DownPolicy::local ? "local" : "error"; }

bool validate(const Config& c, Endpoint* ep, std::string* err) {
  if (!parse_url(c.url, ep, err)) return false;
  if (c.prefix.empty()) {
    // An empty prefix would make CLEAR remove every key of the database and
    // the invalidation subscription cover keys of other applications.
    *err = "redis_prefix must not be empty";
    return false;
  }
  if (c.prefix.find('\0') != std::string::npos) {
    // Lease keys start with a NUL byte (atomics.h): no value key may.
    *err = "redis_prefix must not contain a NUL byte";
    return false;
  }
  auto range = [&](const char* name, uint64_t v, uint64_t lo, uint64_t hi) {
    if (v >= lo && v <= hi) return true;
    *err = std::string(name) + " must be " + std::to_string(lo) + "-" + std::to_string(hi) + " (got " +
           std::to_string(v) + ")";
    return false;
  };
  return range("redis_connect_timeout_ms", c.connect_timeout_ms, 1, 3600000) &&
         range("redis_command_timeout_ms", c.command_timeout_ms, 1, 3600000) &&
         range("redis_queue_max_entries", c.queue_max_entries, 1, 1ull << 32) &&
         range("redis_queue_max_bytes", c.queue_max_bytes, 1024, 1ull << 40) &&
         range("redis_reconnect_min_ms", c.reconnect_min_ms, 1, 3600000) &&
         range("redis_reconnect_max_ms", c.reconnect_max_ms, c.reconnect_min_ms, 3600000) &&
         range("redis_reconnect_jitter_percent", c.reconnect_jitter_percent, 0, 100) &&
         range("redis_drain_timeout_ms", c.drain_timeout_ms, 0, 3600000) &&
         range("redis_heartbeat_ms", c.heartbeat_ms, 10, 3600000) &&
         range("redis_lease_poll_min_ms", c.lease_poll_min_ms, 1, 60000) &&
         range("redis_lease_poll_max_ms", c.lease_poll_max_ms, c.lease_poll_min_ms, 600000) &&
         range("pipeline", c.pipeline, 1, 1u << 20);
}

}  // namespace nearcache::redis
