// daemon/redis/config.cc — see config.h.
#include "redis/config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <tuple>

namespace nearcache::redis {

namespace {
using daemon::kNoMax;
using daemon::OptType;
using C = Config;
constexpr uint64_t kHour = 3600000;
}  // namespace

// The tier's rows: name, type, default, min, max, reloadable, help, field.
const std::vector<daemon::OptionSpec>& redis_options() {
  static const std::vector<daemon::OptionSpec> rows = {
      {"redis_url", OptType::secret, "", 0, 0, false,
       "Redis shared by the hosts: redis://[user:password@]host[:port][/db] or "
       "unix://[user:password@]/path[?db=N]; rediss:// is redis:// over TLS (see redis_tls_*). Empty: no "
       "Redis tier. Put a password in redis_password_file rather than here: "
       "the packaged config file is readable by every member of the nearcache group.",
       &C::url},
      {"redis_password_file", OptType::path, "", 0, 0, true,
       "File holding the Redis password (its first line), read at start and on SIGHUP (used from the next "
       "connection). It must be a regular file that only its owner may read (mode 0600 or 0400), e.g. a systemd "
       "credential (LoadCredential=redis-password:... then /run/credentials/nearcached.service/redis-password). "
       "With it, redis_url may name an ACL user as redis://user@host but must not carry a password.",
       &C::password_file},
      {"redis_prefix", OptType::string, "nearcache:", 0, 0, false,
       "Prefix of every key this cache writes in Redis (the Redis key is prefix + cache key). CLEAR removes "
       "keys under it with SCAN + UNLINK; other hosts' near tiers are invalidated for keys under it.",
       &C::prefix},
      {"redis_connect_timeout_ms", OptType::count, "1000", 1, kHour, false,
       "Time allowed to resolve the host name, connect, authenticate and set up a Redis connection.",
       &C::connect_timeout_ms},
      {"redis_command_timeout_ms", OptType::count, "1000", 1, kHour, false,
       "Time allowed for one Redis reply. A read-through that times out is a miss; a timeout closes the "
       "connection (its state is unknown), which then reconnects with backoff.",
       &C::command_timeout_ms},
      {"redis_queue_max_entries", OptType::count, "100000", 1, 1ull << 32, false,
       "Write-behind queue bound in operations. When full, a new operation is dropped, counted and logged "
       "(a newer write to a queued key turns the queued one into a delete).",
       &C::queue_max_entries},
      {"redis_queue_max_bytes", OptType::size, "64M", 1024, 1ull << 40, false,
       "Write-behind queue bound in bytes (keys, values and about 64 bytes per operation).", &C::queue_max_bytes},
      {"redis_local_ttl_max_ms", OptType::count, "300000", 0, kNoMax, false,
       "Ceiling on the local TTL of a value read from Redis; bounds staleness should an invalidation be "
       "lost. 0: Redis's TTL as is.",
       &C::local_ttl_max_ms},
      {"redis_negative_ttl_ms", OptType::count, "30000", 0, kNoMax, false,
       "How long a key Redis does not have is remembered locally (a negative entry), so that a repeated miss "
       "asks neither the daemon nor Redis; dropped by the same invalidations as values, bounded by "
       "redis_local_ttl_max_ms. 0: no negative entries.",
       &C::negative_ttl_ms},
      {"redis_negative_max", OptType::count, "65536", 0, kNoMax, false,
       "Most negative entries the table holds at once; read-through misses beyond it are not cached. "
       "0: no bound but the table's own eviction.",
       &C::negative_max},
      {"redis_reconnect_min_ms", OptType::count, "100", 1, kHour, false,
       "First delay before reconnecting to Redis; doubled after each failure up to redis_reconnect_max_ms.",
       &C::reconnect_min_ms},
      {"redis_reconnect_max_ms", OptType::count, "10000", 1, kHour, false,
       "Longest delay between reconnection attempts.", &C::reconnect_max_ms},
      {"redis_reconnect_jitter_percent", OptType::count, "50", 0, 100, false,
       "Each reconnect delay is shortened by a random 0 to this percent, so hosts do not reconnect in step.",
       &C::reconnect_jitter_percent},
      {"redis_drain_timeout_ms", OptType::count, "5000", 0, kHour, false,
       "On SIGTERM, how long to keep flushing the write-behind queue to Redis before exiting; what is left "
       "is logged as lost.",
       &C::drain_timeout_ms},
      {"redis_heartbeat_ms", OptType::count, "1000", 10, kHour, false,
       "Period of the invalidation link check: a message published on the data connection must arrive on "
       "the invalidation connection within 3 periods, or the link is declared lost (see redis_stale_grace_ms).",
       &C::heartbeat_ms},
      {"redis_stale_grace_ms", OptType::count, "20000", 0, kHour, false,
       "When the invalidation link is lost, keep serving this host's table for this long; after it, entries "
       "that may be stale are no longer served (the daemon answers from Redis) until the repair on reconnect "
       "drops only the slots written meanwhile. A value served may thus be stale by up to 3 x "
       "redis_heartbeat_ms plus this. 0: drop the whole table as soon as the link is lost and keep it suspended "
       "(what this host stores meanwhile is not served either) until invalidations resume.",
       &C::stale_grace_ms},
      {"redis_lease_poll_min_ms", OptType::count, "10", 1, 60000, false,
       "A LEASE waiting for another host's lease re-checks Redis after this delay, doubling ...",
       &C::lease_poll_min_ms},
      {"redis_lease_poll_max_ms", OptType::count, "250", 1, 600000, false,
       "... up to this; invalidations of the key or the lease wake it earlier.", &C::lease_poll_max_ms},
      {"redis_value_format", OptType::count, "2", 1, 2, false,
       "How values that need an envelope are written to Redis: 2 (values with flags, and bytes that are not one "
       "msgpack value, in the version-2 envelope) or 1 (as version 1 did: ext 126 for flags, other bytes bare, "
       "for hosts of version 1 to read values with flags during a rolling upgrade). Both are always read; see "
       "doc/redis.md, Values in Redis.",
       &C::value_format},
      {"redis_wait_ms", OptType::count, "500", 1, kHour, false,
       "Longest a client request waits for Redis (read-through, ADD, INCR/DECR, LEASE). A read-through not "
       "answered by then is a miss; an ADD, INCR or LEASE follows redis_down (its outcome in Redis is then "
       "unknown). Keep it below the clients' timeouts (the Python client's default is 1 s).",
       &C::wait_ms},
      {"redis_large_values", OptType::boolean, "true", 0, 0, false,
       "A value larger than value_limit (and at most redis_relay_max_bytes) is stored in Redis only: SET "
       "queues it for Redis and deletes this host's copy of the key, GET reads it through from Redis every "
       "time, and no host installs it in its table. false: such a SET is refused (VALUE_TOO_LARGE) as "
       "without a Redis tier, and read-through relays values up to value_limit only.",
       &C::large_values},
      {"redis_conditional_fills", OptType::boolean, "true", 0, 0, false,
       "The SET that ends a lease this host holds (a value read from the database) reaches Redis only if no "
       "write of its key's slot (16384 slots, the repair's counters) reached Redis since the lease was granted "
       "(by Redis; a lease decided on this host while Redis was unreachable: since the last counter snapshot); "
       "otherwise it is refused and this host drops its copy, so that an older value never replaces another "
       "host's write. false: such a SET is queued as any other (a plain SET). See doc/redis.md, Lease fills.",
       &C::conditional_fills},
      {"redis_relay_max_bytes", OptType::size, "16M", 1, 1ull << 31, false,
       "Largest value relayed to and from Redis with redis_large_values (below value_limit, value_limit "
       "counts). A larger value in Redis is refused before it is read (a miss, counted); a larger SET is "
       "VALUE_TOO_LARGE. The automatic max_frame_bytes grows with it.",
       &C::relay_max_option},
      {"redis_tls_ca_file", OptType::path, "", 0, 0, false,
       "rediss:// only: PEM file of the CA certificate(s) that Redis's certificate must chain to. Default: the "
       "system's CA store. Certificates are read again on SIGHUP (used from the next connection).",
       &C::tls_ca_file},
      {"redis_tls_cert_file", OptType::path, "", 0, 0, false,
       "rediss:// only: PEM client certificate (with its chain) for mutual TLS; needs redis_tls_key_file.",
       &C::tls_cert_file},
      {"redis_tls_key_file", OptType::path, "", 0, 0, false,
       "rediss:// only: PEM private key of redis_tls_cert_file. Like redis_password_file it must be a regular "
       "file that only its owner may read (mode 0600 or 0400).",
       &C::tls_key_file},
      {"redis_tls_server_name", OptType::string, "", 0, 0, false,
       "rediss:// only: the name sent as SNI and verified in Redis's certificate. Default: the URL's host (for "
       "an IP address no SNI is sent and the certificate must list the address).",
       &C::tls_server_name},
      {"redis_tls_verify", OptType::boolean, "true", 0, 0, false,
       "rediss:// only: verify Redis's certificate chain and name. false encrypts without knowing who answers "
       "(logged as a warning at start and shown in STATUS); for tests only.",
       &C::tls_verify},
      {"redis_sentinels", OptType::string, "", 0, 0, false,
       "Redis Sentinel: host:port[,host:port...] of the Sentinels to ask for the master's address (port 26379 "
       "by default), in this order; the one that answers moves to the front. Needs redis_sentinel_master. "
       "redis_url then names no host: leave it empty or give redis://[user@]/[db] (rediss:// for TLS to the "
       "Sentinels and the data nodes). The master is asked again before every reconnect.",
       &C::sentinels},
      {"redis_sentinel_master", OptType::string, "", 0, 0, false,
       "The name the Sentinels monitor the master under (sentinel monitor NAME ...).", &C::sentinel_master},
      {"redis_sentinel_password_file", OptType::path, "", 0, 0, true,
       "File holding the Sentinels' password (their requirepass; its first line), with the same checks as "
       "redis_password_file (mode 0600 or 0400); read at start and on SIGHUP. Empty: no AUTH to the Sentinels. "
       "The data nodes' password is redis_password_file's (or redis_url's).",
       &C::sentinel_password_file},
      {"redis_sentinel_timeout_ms", OptType::count, "250", 1, kHour, false,
       "Time allowed to one Sentinel (connect, AUTH, answer) before the next in redis_sentinels is asked; "
       "all of it counts in redis_connect_timeout_ms.",
       &C::sentinel_timeout_ms},
      {"redis_cluster", OptType::string, "auto", 0, 0, false,
       "Redis Cluster: auto (the seed in redis_url is asked with INFO cluster; a cluster node makes the tier "
       "route every key to its slot's master), on (redis_url must be a cluster node), off (one server, never "
       "asked). Not with Sentinel or a unix:// URL. See doc/redis.md, Redis Cluster.",
       &C::cluster},
      {"redis_cluster_seeds", OptType::string, "", 0, 0, false,
       "Redis Cluster: more nodes host:port[,host:port...] (port 6379 by default) to ask for the slot map "
       "when redis_url's node does not answer; same scheme, user and password as redis_url.",
       &C::cluster_seeds},
      {"redis_down", OptType::string, "local", 0, 0, false,
       "What ADD, INCR/DECR and LEASE do while Redis is unreachable: local (decide on this host; STATUS "
       "shows the cache degraded; another host may decide differently) or error (answer UNAVAILABLE).",
       &C::down},
  };
  return rows;
}

Config::Config() {
  std::string err;
  for (const auto& o : redis_options())
    if (!daemon::assign_option(this, o, o.def, &err)) abort();  // a bad default: caught by every test run
}

bool parse_down_policy(const std::string& s, DownPolicy* out, std::string* err) {
  if (s == "local") return *out = DownPolicy::local, true;
  if (s == "error") return *out = DownPolicy::error, true;
  *err = "redis_down must be local or error (got \"" + s + "\")";
  return false;
}

void set_relay_bounds(Config* c, uint64_t value_limit) {
  c->local_max_bytes = value_limit;
  c->relay_max_bytes = c->enabled() && c->large_values ? std::max(value_limit, c->relay_max_option) : value_limit;
}

const char* down_policy_name(DownPolicy p) { return p == DownPolicy::local ? "local" : "error"; }

bool parse_value(const daemon::OptionSpec&, const std::string& raw, DownPolicy* out, std::string* err) {
  return parse_down_policy(raw, out, err);
}

std::string format_value(const daemon::OptionSpec&, DownPolicy v) { return down_policy_name(v); }

bool validate(const Config& c, Endpoint* ep, std::string* err) {
  std::vector<HostPort> sentinels;
  return validate(c, ep, &sentinels, err);
}

namespace {
bool validate_sentinel(const Config& c, std::vector<HostPort>* sentinels, std::string* err) {
  sentinels->clear();
  const bool any = !c.sentinels.empty() || !c.sentinel_master.empty() || !c.sentinel_password_file.empty();
  if (!any) return true;
  if (c.sentinels.empty()) {
    *err = !c.sentinel_master.empty() ? "redis_sentinel_master is set without redis_sentinels (the Sentinels to ask)"
                                      : "redis_sentinel_password_file is set without redis_sentinels";
    return false;
  }
  if (c.sentinel_master.empty()) {
    *err = "redis_sentinels is set without redis_sentinel_master (the name the Sentinels monitor the master under)";
    return false;
  }
  for (char ch : c.sentinel_master)
    if (std::isspace(static_cast<unsigned char>(ch)) || ch == '\0') {
      *err = "redis_sentinel_master must be one word (got \"" + c.sentinel_master + "\")";
      return false;
    }
  if (!parse_sentinels(c.sentinels, sentinels, err)) return false;
  if (c.cluster == "on" || !c.cluster_seeds.empty()) {
    *err = "redis_cluster and redis_cluster_seeds do not go with redis_sentinels (Sentinel or Cluster)";
    return false;
  }
  if (c.sentinel_timeout_ms > c.connect_timeout_ms) {
    *err = "option redis_sentinel_timeout_ms: must be at most redis_connect_timeout_ms (" +
           std::to_string(c.connect_timeout_ms) + "), which covers asking the Sentinels, got " +
           std::to_string(c.sentinel_timeout_ms);
    return false;
  }
  return true;
}
}  // namespace

bool validate(const Config& c, Endpoint* ep, std::vector<HostPort>* sentinels, std::string* err) {
  const bool from_file = !c.password_file.empty();
  if (!validate_sentinel(c, sentinels, err)) return false;
  if (sentinels->empty() ? !parse_url(c.url, ep, err, from_file) : !parse_sentinel_url(c.url, ep, err, from_file))
    return false;
  if (from_file) {
    if (ep->has_password) {
      *err = "redis_url carries a password and redis_password_file is set: remove the password from redis_url";
      return false;
    }
    ep->password = c.password;
    ep->has_password = true;
  }
  const bool tls_opts = !c.tls_ca_file.empty() || !c.tls_cert_file.empty() || !c.tls_key_file.empty() ||
                        !c.tls_server_name.empty() || !c.tls_verify;
  if (tls_opts && !ep->tls) {
    *err = "redis_tls_* options are set but redis_url is not rediss://";
    return false;
  }
  if (c.tls_cert_file.empty() != c.tls_key_file.empty()) {
    *err = "redis_tls_cert_file and redis_tls_key_file go together (mutual TLS)";
    return false;
  }
  if (c.cluster != "auto" && c.cluster != "on" && c.cluster != "off") {
    *err = "redis_cluster must be auto, on or off (got \"" + c.cluster + "\")";
    return false;
  }
  if (!c.cluster_seeds.empty()) {
    std::vector<HostPort> seeds;
    if (!parse_host_ports(c.cluster_seeds, 6379, "redis_cluster_seeds", &seeds, err)) return false;
    if (c.cluster == "off") {
      *err = "redis_cluster_seeds is set with redis_cluster = off";
      return false;
    }
  }
  if (ep->unix_socket && (c.cluster == "on" || !c.cluster_seeds.empty())) {
    *err = "Redis Cluster needs TCP: redis_url is unix:// with redis_cluster = on or redis_cluster_seeds";
    return false;
  }
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
  for (const auto& o : redis_options())
    if (!daemon::check_option_bounds(c, o, err)) return false;
  // Each *_max at least its *_min.
  for (auto [max, min, max_name, min_name] :
       {std::tuple{c.reconnect_max_ms, c.reconnect_min_ms, "redis_reconnect_max_ms", "redis_reconnect_min_ms"},
        std::tuple{c.lease_poll_max_ms, c.lease_poll_min_ms, "redis_lease_poll_max_ms", "redis_lease_poll_min_ms"}})
    if (max < min) {
      *err = std::string("option ") + max_name + ": must be at least " + min_name + " (" + std::to_string(min) +
             "), got " + std::to_string(max);
      return false;
    }
  if (c.pipeline < 1 || c.pipeline > (1u << 20)) {
    *err = "pipeline must be 1-1048576 (got " + std::to_string(c.pipeline) + ")";
    return false;
  }
  return true;
}

bool read_private_file(const std::string& path, const char* option, size_t max_bytes, std::string* data,
                       std::string* err) {
  auto fail = [&](const std::string& why) {
    *err = std::string(option) + " " + path + ": " + why;
    return false;
  };
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) return fail(std::strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    const int e = errno;
    close(fd);
    return fail(std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return fail("not a regular file");
  }
  if (st.st_mode & 077) {
    close(fd);
    char mode[8];
    snprintf(mode, sizeof mode, "%04o", unsigned(st.st_mode & 07777));
    return fail(std::string("mode ") + mode + " lets others than its owner read or change it; chmod 600 it");
  }
  data->clear();
  char buf[4096];
  for (;;) {
    const ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int e = errno;
      close(fd);
      return fail(std::strerror(e));
    }
    if (n == 0) break;
    data->append(buf, size_t(n));
    if (data->size() > max_bytes) {
      close(fd);
      return fail("longer than " + std::to_string(max_bytes / 1024) + " KiB");
    }
  }
  close(fd);
  if (data->empty()) return fail("empty");
  return true;
}

bool read_password_file(const std::string& path, std::string* password, std::string* err, const char* option) {
  std::string data;
  if (!read_private_file(path, option, 65536, &data, err)) return false;
  const size_t eol = data.find_first_of("\r\n");
  if (eol != std::string::npos) data.resize(eol);
  if (data.empty()) {
    *err = std::string(option) + " " + path + ": empty (the password is its first line)";
    return false;
  }
  *password = std::move(data);
  return true;
}

}  // namespace nearcache::redis
