// daemon/redis/config.h — the Redis tier's settings and their option rows.
//
// redis_options() are the tier's rows of the daemon's option table (shape:
// config/option_row.h): each names its field here, its default, bounds and
// help. Config() starts from the rows' defaults; the daemon holds a Config as
// daemon::Config::redis and hands it to the tier after parsing. validate()
// checks a Config (the rows' bounds and the rules between fields) and parses
// its URL (or, with redis_sentinels, the Sentinel form of it, url.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "config/option_row.h"
#include "redis/url.h"

namespace nearcache::redis {

// What ADD, INCR/DECR and LEASE do while Redis is unreachable.
enum class DownPolicy : uint8_t {
  local,  // decide on this host alone; STATUS reports the cache degraded
  error,  // answer UNAVAILABLE
};

// Each option's default is in its row (redis_options()).
struct Config {
  Config();  // the rows' defaults
  std::string url;                // redis_url; empty = no Redis tier
  std::string prefix;             // Redis key = prefix + local key
  uint64_t connect_timeout_ms;    // resolve + connect + AUTH/SELECT + setup
  uint64_t command_timeout_ms;    // per command; a timeout closes the connection
  uint64_t queue_max_entries;     // write-behind bound (operations) ...
  uint64_t queue_max_bytes;       // ... and (keys + values + overhead)
  uint64_t local_ttl_max_ms;      // ceiling on the local TTL of values read from Redis; 0 = none
  uint64_t negative_ttl_ms;       // how long a read-through miss is cached as a negative entry; 0 = never
  uint64_t negative_max;          // most negative entries at once; 0 = no bound of their own
  uint64_t reconnect_min_ms;      // first reconnect delay, doubled per failure ...
  uint64_t reconnect_max_ms;      // ... up to this
  uint64_t reconnect_jitter_percent;  // each delay is shortened by up to this much, at random
  uint64_t drain_timeout_ms;      // SIGTERM: how long to flush the queue before exiting
  uint64_t heartbeat_ms;          // invalidation link check period (3 missed = link lost)
  uint64_t stale_grace_ms;        // after the link is lost, serve the table this long, then suspend it; 0 = flush at once
  uint64_t lease_poll_min_ms;     // LEASE waiters on a lease held by another host poll ...
  uint64_t lease_poll_max_ms;     // ... with this backoff (and wake on invalidations)
  DownPolicy down;                // redis_down
  uint64_t value_format = 2;      // redis_value_format: the envelope version written (value.h)
  uint64_t wait_ms;               // longest a client request waits for Redis (the daemon's bound)
  bool large_values;              // redis_large_values: values over value_limit go to Redis only
  bool conditional_fills;         // redis_conditional_fills: a lease's SET is stored only if its slot is unwritten
  uint64_t relay_max_option;      // redis_relay_max_bytes: their bound (see relay_max_bytes)
  std::string password_file;      // redis_password_file; "" = the password is in the URL, if any
  std::string password;           // read from password_file by the daemon (not an option)
  uint64_t pipeline = 1024;       // write-behind commands in flight at once (not an option)
  // TLS (rediss:// URLs only; see tls.h).
  std::string tls_ca_file;        // redis_tls_ca_file; "" = the system's CA store
  std::string tls_cert_file;      // redis_tls_cert_file (mutual TLS) ...
  std::string tls_key_file;       // ... redis_tls_key_file (owner-only, like the password file)
  std::string tls_server_name;    // redis_tls_server_name; "" = the URL's host
  bool tls_verify;                // redis_tls_verify; off: no chain or name check (warned)
  // Sentinel (sentinel.h): the Sentinels name the master; redis_url then names no host.
  std::string sentinels;          // redis_sentinels: host:port[,host:port...]; "" = no Sentinel
  std::string sentinel_master;    // redis_sentinel_master: the master's name
  std::string sentinel_password_file;  // redis_sentinel_password_file; "" = no AUTH to the Sentinels
  uint64_t sentinel_timeout_ms;   // redis_sentinel_timeout_ms: one Sentinel's connect + AUTH + answer
  // Redis Cluster (cluster.h).
  std::string cluster;            // redis_cluster: auto (asked of the seed), on, off
  std::string cluster_seeds;      // redis_cluster_seeds: more host:port seeds besides redis_url's
  // Set by the cluster for each master's part (not options): -1 = not a
  // cluster part; else a slot this master served when its part was made,
  // whose hash tag keeps the part's own keys (flush marker, clear counter) on it.
  int shard_home_slot = -1;

  // A Redis tier is configured (redis_url or the Sentinel options).
  bool enabled() const { return !url.empty() || !sentinels.empty() || !sentinel_master.empty(); }
  // The largest value the daemon relays to and from Redis (value bytes,
  // envelope removed): a larger one is refused in Redis, before any of it is
  // sent (read_through.h), and a SET of one is VALUE_TOO_LARGE. Not an
  // option: set_relay_bounds() derives it (and local_max_bytes) from
  // value_limit, redis_large_values and redis_relay_max_bytes.
  uint64_t relay_max_bytes = 1ull << 20;
  // The largest value this host's table holds (value_limit): a value between
  // it and relay_max_bytes lives in Redis only (never installed here).
  uint64_t local_max_bytes = 1ull << 20;
};

// relay_max_bytes = max(value_limit, redis_relay_max_bytes) with a Redis tier
// and redis_large_values on, else value_limit; local_max_bytes = value_limit.
void set_relay_bounds(Config* c, uint64_t value_limit);
// Whether a value of n bytes is one that lives in Redis only.
inline bool redis_only(const Config& c, uint64_t n) { return n > c.local_max_bytes && n <= c.relay_max_bytes; }

// The longest stored Redis value the scripts return: relay_max_bytes plus
// the flags envelope's largest header (ext 32: 6 bytes) and its flags byte.
inline uint64_t relay_max_stored(const Config& c) { return c.relay_max_bytes + 7; }

// The tier's rows of the daemon's option table, in the order to document them.
const std::vector<daemon::OptionSpec>& redis_options();

bool parse_down_policy(const std::string& s, DownPolicy* out, std::string* err);
const char* down_policy_name(DownPolicy p);
// redis_down as a row's value (option_row.h's parse_value / format_value).
bool parse_value(const daemon::OptionSpec& o, const std::string& raw, DownPolicy* out, std::string* err);
std::string format_value(const daemon::OptionSpec& o, DownPolicy v);

// Checks the rows' bounds and the rules between fields, and parses cfg.url into *ep (cfg.url must not be empty).
// With password_file set, the URL must not carry a password (it may name a
// user as `user@`) and ep gets cfg.password.
bool validate(const Config& cfg, Endpoint* ep, std::string* err);
// validate() and, with Sentinel, the Sentinels' addresses (else *sentinels is empty).
bool validate(const Config& cfg, Endpoint* ep, std::vector<HostPort>* sentinels, std::string* err);

// Reads the Redis password (or, `option`, the Sentinels') from `path`: its first line, without the line end.
// Refuses a file that is not a regular file, is empty, or that anyone but its
// owner may read or write (mode & 077): the packaged config is readable by
// every app user, the password file must not be.
bool read_password_file(const std::string& path, std::string* password, std::string* err,
                        const char* option = "redis_password_file");
// The same checks for any secret file (redis_tls_key_file): a regular file,
// not a symlink, mode & 077 == 0, at most max_bytes, not empty. `option`
// names it in *err.
bool read_private_file(const std::string& path, const char* option, size_t max_bytes, std::string* data,
                       std::string* err);

}  // namespace nearcache::redis
