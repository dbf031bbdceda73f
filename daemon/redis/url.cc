// daemon/redis/url.cc — see url.h.
#include "redis/url.h"

#include <cctype>

namespace nearcache::redis {

namespace {

bool pct_decode(std::string_view in, std::string* out, std::string* err) {
  out->clear();
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out->push_back(in[i]);
      continue;
    }
    auto hex = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      return -1;
    };
    const int hi = i + 1 < in.size() ? hex(in[i + 1]) : -1, lo = i + 2 < in.size() ? hex(in[i + 2]) : -1;
    if (hi < 0 || lo < 0) {
      *err = "bad percent-escape in the credentials of redis_url";
      return false;
    }
    out->push_back(char(hi * 16 + lo));
    i += 2;
  }
  return true;
}

bool parse_uint(std::string_view s, uint64_t max, uint64_t* out) {
  if (s.empty() || s.size() > 10) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + uint64_t(c - '0');
  }
  if (v > max) return false;
  *out = v;
  return true;
}

// "[user]:password@", or "user@" when the password comes from a file.
bool parse_userinfo(std::string_view ui, Endpoint* e, std::string* err, bool user_only) {
  const size_t colon = ui.find(':');
  if (colon == std::string_view::npos) {
    if (user_only) return pct_decode(ui, &e->user, err);
    // redis://secret@host is a common mistake for redis://:secret@host; the
    // form is ambiguous (user or password?), so say how to write it.
    *err = "redis_url: credentials must be user:password@ or :password@ (got no ':' before '@'; "
           "user@ alone is for use with redis_password_file)";
    return false;
  }
  if (!pct_decode(ui.substr(0, colon), &e->user, err) || !pct_decode(ui.substr(colon + 1), &e->password, err))
    return false;
  e->has_password = true;
  return true;
}

// "host[:port]" or "[v6][:port]"; `what` names the option in *err.
bool parse_host_port(std::string_view hostport, uint16_t default_port, const char* what, HostPort* out,
                     std::string* err) {
  const std::string w = what;
  std::string_view host = hostport, port;
  if (!hostport.empty() && hostport[0] == '[') {
    const size_t close = hostport.find(']');
    if (close == std::string_view::npos) {
      *err = w + ": unterminated [IPv6] address";
      return false;
    }
    host = hostport.substr(1, close - 1);
    std::string_view after = hostport.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') {
        *err = w + ": expected :port after the [IPv6] address";
        return false;
      }
      port = after.substr(1);
      if (port.empty()) {
        *err = w + ": empty port";
        return false;
      }
    }
  } else {
    const size_t colon = hostport.find(':');
    if (colon != std::string_view::npos) {
      host = hostport.substr(0, colon);
      port = hostport.substr(colon + 1);
      if (port.empty()) {
        *err = w + ": empty port";
        return false;
      }
    }
  }
  if (host.empty()) {
    *err = w + (w == "redis_url" ? ": no host (e.g. redis://127.0.0.1:6379/0)" : ": no host in \"" + std::string(hostport) + "\"");
    return false;
  }
  for (char c : host)
    if (std::isspace(static_cast<unsigned char>(c)) || c == '/' || c == '@' || c == ',') {
      *err = w + ": bad character in host \"" + std::string(host) + "\"";
      return false;
    }
  out->host = std::string(host);
  out->port = default_port;
  if (!port.empty()) {
    uint64_t p;
    if (!parse_uint(port, 65535, &p) || p == 0) {
      *err = w + ": port must be 1-65535 (got \"" + std::string(port) + "\")";
      return false;
    }
    out->port = uint16_t(p);
  }
  return true;
}

bool parse_any_url(std::string_view url, Endpoint* out, std::string* err, bool user_only, bool no_host);

}  // namespace

bool parse_url(std::string_view url, Endpoint* out, std::string* err, bool user_only) {
  return parse_any_url(url, out, err, user_only, false);
}

bool parse_sentinel_url(std::string_view url, Endpoint* out, std::string* err, bool user_only) {
  if (url.empty()) url = "redis://";
  if (!parse_any_url(url, out, err, user_only, true)) return false;
  if (out->unix_socket) {
    *err = "redis_url: unix:// cannot be used with redis_sentinels (the Sentinels name a TCP master)";
    return false;
  }
  return true;
}

bool parse_host_ports(std::string_view list, uint16_t default_port, const char* option, std::vector<HostPort>* out,
                      std::string* err) {
  out->clear();
  size_t i = 0;
  while (i <= list.size()) {
    size_t j = list.find(',', i);
    if (j == std::string_view::npos) j = list.size();
    std::string_view item = list.substr(i, j - i);
    while (!item.empty() && std::isspace(static_cast<unsigned char>(item.front()))) item.remove_prefix(1);
    while (!item.empty() && std::isspace(static_cast<unsigned char>(item.back()))) item.remove_suffix(1);
    if (item.empty()) {
      *err = std::string(option) + ": empty entry (write host:port[,host:port...])";
      return false;
    }
    HostPort hp;
    if (!parse_host_port(item, default_port, option, &hp, err)) return false;
    for (const auto& o : *out)
      if (o == hp) {
        *err = std::string(option) + ": " + hp.where() + " is listed twice";
        return false;
      }
    out->push_back(std::move(hp));
    i = j + 1;
  }
  return true;
}

bool parse_sentinels(std::string_view list, std::vector<HostPort>* out, std::string* err) {
  return parse_host_ports(list, 26379, "redis_sentinels", out, err);
}

std::string HostPort::where() const {
  return (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

namespace {

bool parse_any_url(std::string_view url, Endpoint* out, std::string* err, bool user_only, bool no_host) {
  Endpoint e;
  std::string_view rest;
  auto starts = [&](std::string_view p) {
    if (url.size() < p.size()) return false;
    for (size_t i = 0; i < p.size(); ++i)
      if (std::tolower(static_cast<unsigned char>(url[i])) != p[i]) return false;
    return true;
  };
  if (starts("rediss://")) {
    rest = url.substr(9);
    e.tls = true;
  } else if (starts("redis://")) {
    rest = url.substr(8);
  } else if (starts("unix://")) {
    rest = url.substr(7);
    e.unix_socket = true;
  } else {
    // Only the scheme is echoed: the rest may hold a password.
    const size_t sep = url.find("://");
    *err = "redis_url must start with redis://, rediss:// or unix:// (got " +
           (sep != std::string_view::npos && sep <= 16 ? "\"" + std::string(url.substr(0, sep + 3)) + "...\""
                                                       : std::string("no such scheme")) +
           ")";
    return false;
  }

  if (e.unix_socket) {
    // unix://[user:password@]/path[?db=N]
    const size_t slash = rest.find('/');
    if (slash == std::string_view::npos) {
      *err = "redis_url: unix:// needs an absolute socket path, e.g. unix:///run/redis/redis.sock";
      return false;
    }
    std::string_view auth = rest.substr(0, slash);
    if (!auth.empty()) {
      if (auth.back() != '@') {
        *err = "redis_url: unix:// takes no host; write unix:///path or unix://user:password@/path";
        return false;
      }
      if (!parse_userinfo(auth.substr(0, auth.size() - 1), &e, err, user_only)) return false;
    }
    std::string_view path = rest.substr(slash);
    const size_t q = path.find('?');
    if (q != std::string_view::npos) {
      std::string_view query = path.substr(q + 1);
      path = path.substr(0, q);
      uint64_t db;
      if (query.substr(0, 3) != "db=" || !parse_uint(query.substr(3), 1u << 20, &db)) {
        *err = "redis_url: the only query parameter of unix:// is db=N (got \"" + std::string(query) + "\")";
        return false;
      }
      e.db = unsigned(db);
    }
    if (path.size() < 2) {
      *err = "redis_url: unix:// needs a socket path";
      return false;
    }
    e.path = std::string(path);
    *out = std::move(e);
    return true;
  }

  // redis://[[user]:password@]host[:port][/db]
  const size_t at = rest.rfind('@');
  if (at != std::string_view::npos) {
    if (!parse_userinfo(rest.substr(0, at), &e, err, user_only)) return false;
    rest = rest.substr(at + 1);
  }
  std::string_view hostport = rest, dbpart;
  const size_t slash = rest.find('/');
  if (slash != std::string_view::npos) {
    hostport = rest.substr(0, slash);
    dbpart = rest.substr(slash + 1);
  }
  if (dbpart.find('?') != std::string_view::npos || hostport.find('?') != std::string_view::npos) {
    *err = "redis_url: redis:// takes no query parameters";
    return false;
  }
  if (no_host) {
    if (!hostport.empty()) {
      *err = "redis_url names a host while redis_sentinels is set: the Sentinels name the master; write "
             "redis://[user@]/[db] (or rediss://...), or leave redis_url empty";
      return false;
    }
  } else {
    HostPort hp;
    if (!parse_host_port(hostport, 6379, "redis_url", &hp, err)) return false;
    e.host = std::move(hp.host);
    e.port = hp.port;
  }
  if (!dbpart.empty()) {
    uint64_t db;
    if (!parse_uint(dbpart, 1u << 20, &db)) {
      *err = "redis_url: database must be a number (got \"" + std::string(dbpart) + "\")";
      return false;
    }
    e.db = unsigned(db);
  }
  *out = std::move(e);
  return true;
}

}  // namespace

std::string Endpoint::masked() const {
  std::string s = unix_socket ? "unix://" : tls ? "rediss://" : "redis://";
  if (has_password || !user.empty()) s += user + ":***@";
  if (unix_socket) {
    s += path;
    if (db) s += "?db=" + std::to_string(db);
    return s;
  }
  if (host.empty()) return s + "/" + (db ? std::to_string(db) : "");  // the Sentinel form
  s += host.find(':') != std::string::npos ? "[" + host + "]" : host;
  s += ":" + std::to_string(port);
  if (db) s += "/" + std::to_string(db);
  return s;
}

std::string Endpoint::where() const {
  if (!unix_socket && host.empty()) return "(the Sentinels' master)";
  if (unix_socket) return path;
  return (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

}  // namespace nearcache::redis
