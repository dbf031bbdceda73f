// daemon/redis/url.h — the redis_url option: where Redis is and how to log in.
//
//   redis://[[user]:password@]host[:port][/db]     TCP; host may be a name, an
//                                                  IPv4 address or [IPv6]
//   rediss://...                                   the same as redis:// over TLS
//                                                  (redis_tls_* options, tls.h)
//   unix://[[user]:password@]/path[?db=N]          Unix socket
//
// With Sentinel (redis_sentinels) the Sentinels name the master, so the URL
// names no host: redis://[[user]:password@]/[db] or rediss://... (TLS to the
// Sentinels and the data nodes), e.g. redis://app@/2; it may be omitted
// (redis://, database 0). parse_sentinel_url() reads that form.
//
// User and password are percent-decoded.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace nearcache::redis {

struct Endpoint {
  bool unix_socket = false;
  bool tls = false;  // rediss://
  std::string host;  // TCP: name or address (without brackets)
  uint16_t port = 6379;
  std::string path;  // unix socket path
  std::string user;  // empty: AUTH password only (or no AUTH)
  std::string password;
  bool has_password = false;  // `redis://user:@host` sends AUTH with an empty password
  unsigned db = 0;

  // "redis://alice:***@host:6379/2" (or rediss://) — never the password.
  std::string masked() const;
  // "host:port" or the socket path, for log lines.
  std::string where() const;
};

// Parses `url` into *out; false with *err naming the problem. With
// `user_without_password` (the password comes from redis_password_file),
// `user@` names an ACL user and carries no password.
bool parse_url(std::string_view url, Endpoint* out, std::string* err, bool user_without_password = false);
// The Sentinel form above ("" = redis://): the same fields, host left empty.
bool parse_sentinel_url(std::string_view url, Endpoint* out, std::string* err, bool user_without_password = false);

struct HostPort {
  std::string host;  // name or address (without brackets)
  uint16_t port = 0;
  std::string where() const;  // "host:port", "[v6]:port"
  bool operator==(const HostPort& o) const { return host == o.host && port == o.port; }
};
// redis_sentinels: "host[:port][,host[:port]...]" (port 26379 by default,
// [IPv6]); at least one, no duplicates.
bool parse_sentinels(std::string_view list, std::vector<HostPort>* out, std::string* err);
// The same list shape with another default port; `option` names it in *err
// (redis_cluster_seeds: port 6379).
bool parse_host_ports(std::string_view list, uint16_t default_port, const char* option, std::vector<HostPort>* out,
                      std::string* err);

}  // namespace nearcache::redis
