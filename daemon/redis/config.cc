// daemon/redis/config.cc — see config.h.
#include "redis/config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace nearcache::redis {

const std::vector<OptionRow>& redis_options() {
  static const std::vector<OptionRow> rows = {
      {"redis_url", "secret", "", false,
       "Redis shared by the hosts: redis://[user:password@]host[:port][/db] or "
       "unix://[user:password@]/path[?db=N]; rediss:// is redis:// over TLS (see redis_tls_*). Empty: no "
       "Redis tier. Put a password in redis_password_file rather than here: "
       "the packaged config file is readable by every member of the nearcache group."},
      {"redis_password_file", "path", "", true,
       "File holding the Redis password (its first line), read at start and on SIGHUP (used from the next "
       "connection). It must be a regular file that only its owner may read (mode 0600 or 0400), e.g. a systemd "
       "credential (LoadCredential=redis-password:... then /run/credentials/nearcached.service/redis-password). "
       "With it, redis_url may name an ACL user as redis://user@host but must not carry a password."},
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
      {"redis_wait_ms", "count", "500", false,
       "Longest a client request waits for Redis (read-through, ADD, INCR/DECR, LEASE). A read-through not "
       "answered by then is a miss; an ADD, INCR or LEASE follows redis_down (its outcome in Redis is then "
       "unknown). Keep it below the clients' timeouts (the Python client's default is 1 s)."},
      {"redis_tls_ca_file", "path", "", false,
       "rediss:// only: PEM file of the CA certificate(s) that Redis's certificate must chain to. Default: the "
       "system's CA store. Certificates are read again on SIGHUP (used from the next connection)."},
      {"redis_tls_cert_file", "path", "", false,
       "rediss:// only: PEM client certificate (with its chain) for mutual TLS; needs redis_tls_key_file."},
      {"redis_tls_key_file", "path", "", false,
       "rediss:// only: PEM private key of redis_tls_cert_file. Like redis_password_file it must be a regular "
       "file that only its owner may read (mode 0600 or 0400)."},
      {"redis_tls_server_name", "string", "", false,
       "rediss:// only: the name sent as SNI and verified in Redis's certificate. Default: the URL's host (for "
       "an IP address no SNI is sent and the certificate must list the address)."},
      {"redis_tls_verify", "boolean", "true", false,
       "rediss:// only: verify Redis's certificate chain and name. false encrypts without knowing who answers "
       "(logged as a warning at start and shown in STATUS); for tests only."},
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
  const bool from_file = !c.password_file.empty();
  if (!parse_url(c.url, ep, err, from_file)) return false;
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
         range("redis_wait_ms", c.wait_ms, 1, 3600000) && range("pipeline", c.pipeline, 1, 1u << 20);
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

bool read_password_file(const std::string& path, std::string* password, std::string* err) {
  std::string data;
  if (!read_private_file(path, "redis_password_file", 65536, &data, err)) return false;
  const size_t eol = data.find_first_of("\r\n");
  if (eol != std::string::npos) data.resize(eol);
  if (data.empty()) {
    *err = "redis_password_file " + path + ": empty (the password is its first line)";
    return false;
  }
  *password = std::move(data);
  return true;
}

}  // namespace nearcache::redis
