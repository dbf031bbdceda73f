// daemon/redis/config.h — the Redis tier's settings and their option rows.
//
// The daemon owns the option table (daemon/options.*); redis_options() lists
// the rows to add there (name, type, default, reloadable, help) with the same
// type names, and Config is what the daemon hands to the tier after parsing.
// validate() checks a Config and parses its URL.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "redis/url.h"

namespace nearcache::redis {

// What ADD, INCR/DECR and LEASE do while Redis is unreachable.
enum class DownPolicy {
  local,  // decide on this host alone; STATUS reports the cache degraded
  error,  // answer UNAVAILABLE
};

struct Config {
  std::string url;                          // redis_url; empty = no Redis tier
  std::string prefix = "nearcache:";        // Redis key = prefix + local key
  uint64_t connect_timeout_ms = 1000;       // resolve + connect + AUTH/SELECT + setup
  uint64_t command_timeout_ms = 1000;       // per command; a timeout closes the connection
  uint64_t queue_max_entries = 100000;      // write-behind bound (operations) ...
  uint64_t queue_max_bytes = 64ull << 20;   // ... and (keys + values + overhead)
  uint64_t local_ttl_max_ms = 300000;       // ceiling on the local TTL of values read from Redis; 0 = none
  uint64_t reconnect_min_ms = 100;          // first reconnect delay, doubled per failure ...
  uint64_t reconnect_max_ms = 10000;        // ... up to this
  uint64_t reconnect_jitter_percent = 50;   // each delay is shortened by up to this much, at random
  uint64_t drain_timeout_ms = 5000;         // SIGTERM: how long to flush the queue before exiting
  uint64_t heartbeat_ms = 1000;             // invalidation link check period (3 missed = link lost)
  uint64_t lease_poll_min_ms = 10;          // LEASE waiters on a lease held by another host poll ...
  uint64_t lease_poll_max_ms = 250;         // ... with this backoff (and wake on invalidations)
  DownPolicy down = DownPolicy::local;      // redis_down
  uint64_t wait_ms = 500;                   // longest a client request waits for Redis (the daemon's bound)
  std::string password_file;                // redis_password_file; "" = the password is in the URL, if any
  std::string password;                     // read from password_file by the daemon (not an option)
  uint64_t pipeline = 1024;                 // write-behind commands in flight at once (not an option)
  // The largest value read from Redis that the daemon relays (value bytes,
  // envelope removed); a larger one is refused in Redis, before any of it is
  // sent (read_through.h). The daemon sets it from value_limit.
  uint64_t relay_max_bytes = 1ull << 20;
};

// The longest stored Redis value the scripts return: relay_max_bytes plus
// the flags envelope's largest header (ext 32: 6 bytes) and its flags byte.
inline uint64_t relay_max_stored(const Config& c) { return c.relay_max_bytes + 7; }

struct OptionRow {
  const char* name;
  const char* type;  // the daemon's OptType names: string, secret, count, size
  const char* def;
  bool reloadable;
  const char* help;
};
// Rows for the daemon's option table, in the order to document them.
// (redis_url and redis_prefix already exist there; their help text changes.)
const std::vector<OptionRow>& redis_options();

bool parse_down_policy(const std::string& s, DownPolicy* out, std::string* err);
const char* down_policy_name(DownPolicy p);

// Checks ranges and parses cfg.url into *ep (cfg.url must not be empty).
// With password_file set, the URL must not carry a password (it may name a
// user as `user@`) and ep gets cfg.password.
bool validate(const Config& cfg, Endpoint* ep, std::string* err);

// Reads the Redis password from `path`: its first line, without the line end.
// Refuses a file that is not a regular file, is empty, or that anyone but its
// owner may read or write (mode & 077): the packaged config is readable by
// every app user, the password file must not be.
bool read_password_file(const std::string& path, std::string* password, std::string* err);

}  // namespace nearcache::redis
