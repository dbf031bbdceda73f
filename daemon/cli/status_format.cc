// daemon/cli/status_format.cc — see status_format.h.
#include "cli/status_format.h"

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <sstream>

#include "cli/key_text.h"
#include "cli/msgpack_bytes.h"
#include "cli/value_json.h"
#include "protocol/metrics.h"

namespace nearcache::daemon {

namespace {
const msgpack::object* lookup(const msgpack::object& map, std::string_view key);
double number(const msgpack::object* o);
}  // namespace

const msgpack::object* status_field(const msgpack::object& map, std::string_view key) { return lookup(map, key); }
double status_number(const msgpack::object* o) { return number(o); }

namespace {

const msgpack::object* lookup(const msgpack::object& map, std::string_view key) {
  if (map.type != msgpack::type::MAP) return nullptr;
  for (uint32_t i = 0; i < map.via.map.size; ++i)
    if (str_of(map.via.map.ptr[i].key) == key) return &map.via.map.ptr[i].val;
  return nullptr;
}

double number(const msgpack::object* o) {
  if (!o) return NAN;
  switch (o->type) {
    case msgpack::type::POSITIVE_INTEGER: return double(o->via.u64);
    case msgpack::type::NEGATIVE_INTEGER: return double(o->via.i64);
    case msgpack::type::FLOAT32:
    case msgpack::type::FLOAT64: return o->via.f64;
    case msgpack::type::BOOLEAN: return o->via.boolean ? 1 : 0;
    default: return NAN;
  }
}

// Integers exactly, reals with enough digits.
std::string number_text(const msgpack::object* o) {
  if (!o) return "NaN";
  char buf[64];
  if (o->type == msgpack::type::POSITIVE_INTEGER) snprintf(buf, sizeof buf, "%" PRIu64, o->via.u64);
  else if (o->type == msgpack::type::NEGATIVE_INTEGER) snprintf(buf, sizeof buf, "%" PRId64, o->via.i64);
  else snprintf(buf, sizeof buf, "%.17g", number(o));
  return buf;
}

}  // namespace

std::string human_bytes(double v) {
  static const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (v >= 1024 && u < 4) v /= 1024, ++u;
  char buf[32];
  snprintf(buf, sizeof buf, u ? "%.1f %s" : "%.0f %s", v, units[u]);
  return buf;
}

namespace {

std::string human_duration(uint64_t s) {
  char buf[64];
  if (s >= 86400) snprintf(buf, sizeof buf, "%" PRIu64 "d %" PRIu64 "h %" PRIu64 "m", s / 86400, s % 86400 / 3600, s % 3600 / 60);
  else if (s >= 3600) snprintf(buf, sizeof buf, "%" PRIu64 "h %" PRIu64 "m %" PRIu64 "s", s / 3600, s % 3600 / 60, s % 60);
  else if (s >= 60) snprintf(buf, sizeof buf, "%" PRIu64 "m %" PRIu64 "s", s / 60, s % 60);
  else snprintf(buf, sizeof buf, "%" PRIu64 "s", s);
  return buf;
}

}  // namespace

std::string status_json(const msgpack::object& status) { return json_text(value_json(status)) + "\n"; }

std::string status_text(const msgpack::object& st) {
  std::ostringstream s;
  const msgpack::object* cfg = lookup(st, "config");
  auto cfg_str = [&](const char* k) {
    const msgpack::object* v = cfg ? lookup(*cfg, k) : nullptr;
    return v ? std::string(str_of(*v)) : std::string("?");
  };
  const msgpack::object* version = lookup(st, "version");
  const double up = number(lookup(st, "uptime_s"));  // NaN when absent: converting that is undefined
  s << "nearcached " << (version ? str_of(*version) : "?") << ", pid " << number_text(lookup(st, "pid")) << ", up "
    << (up >= 0 ? human_duration(uint64_t(up)) : std::string("?")) << "\n";
  s << "  socket: " << cfg_str("socket") << "\n  segment: " << cfg_str("segment") << "\n";
  const MetricSpec* table = metric_table();
  for (size_t i = 0; i < kMetricCount; ++i) {
    const MetricSpec& m = table[i];
    const std::string name = m.name;
    if (name == "up" || name == "uptime_seconds") continue;
    const msgpack::object* v = lookup(st, m.name);
    std::string text;
    if (!v) text = "-";
    else if (m.unit == MetricUnit::bytes) text = human_bytes(number(v)) + " (" + number_text(v) + ")";
    else if (m.unit == MetricUnit::ratio) {
      char buf[32];
      snprintf(buf, sizeof buf, "%.1f%%", number(v) * 100);
      text = buf;
    } else if (m.unit == MetricUnit::seconds) {
      text = number_text(v) + " s";
    } else if (m.unit == MetricUnit::millis) {
      char buf[32];
      snprintf(buf, sizeof buf, "%.1f ms", number(v));
      text = buf;
    } else {
      text = number_text(v);
    }
    char line[160];
    snprintf(line, sizeof line, "  %-27s %s\n", (std::string(m.label) + ":").c_str(), text.c_str());
    s << line;
  }
  if (const msgpack::object* r = lookup(st, "redis")) {
    auto text = [&](const char* k) {
      const msgpack::object* v = lookup(*r, k);
      return v ? std::string(str_of(*v)) : std::string("?");
    };
    auto yes = [&](const char* k) {
      const msgpack::object* v = lookup(*r, k);
      return v && v->type == msgpack::type::BOOLEAN && v->via.boolean;
    };
    s << "  redis: " << text("url") << " (prefix '" << text("prefix") << "')\n";
    if (!text("sentinel_master").empty() && text("sentinel_master") != "?")
      s << "    Sentinel: master '" << text("sentinel_master") << "' at " << text("master") << " (last answer from "
        << text("sentinel") << ")\n";
    s << "    data link: " << text("state");
    const double since = number(lookup(*r, "since_unix_ms"));
    if (since > 0) {
      char buf[64];
      const time_t t = time_t(since / 1000);
      struct tm tm;
      gmtime_r(&t, &tm);
      strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
      s << " since " << buf;
    }
    s << "; invalidations: " << text("invalidation_state") << (yes("coherent") ? " (coherent)" : " (not coherent)")
      << "\n";
    if (yes("degraded"))
      s << "    DEGRADED: Redis is unreachable; ADD, INCR and LEASE are decided on this host alone (redis_down = "
        << text("redis_down") << ")\n";
    if (text("tls") == "on, not verified")
      s << "    TLS: on, NOT VERIFIED (redis_tls_verify = false): anyone on the path can pose as Redis\n";
    else if (!text("tls").empty() && text("tls") != "off")
      s << "    TLS: " << text("tls") << " (certificate chain and name verified)\n";
    if (!text("tls_verify_error").empty())
      s << "    last TLS verification failure: " << text("tls_verify_error") << "\n";
    if (!text("last_error").empty()) s << "    last error: " << text("last_error") << "\n";
    if (!text("invalidation_last_error").empty())
      s << "    last invalidation error: " << text("invalidation_last_error") << "\n";
    const MetricSpec* rt = redis_metric_table();
    for (size_t i = 0; i < kRedisMetricCount; ++i) {
      const msgpack::object* v = lookup(st, rt[i].name);
      if (!v) continue;
      const std::string value = rt[i].unit == MetricUnit::bytes ? human_bytes(number(v)) + " (" + number_text(v) + ")"
                                                                : number_text(v);
      char line[160];
      snprintf(line, sizeof line, "    %-30s %s\n", (std::string(rt[i].label) + ":").c_str(), value.c_str());
      s << line;
    }
  }
  s << prefix_traffic_text(st, "  ");
  const msgpack::object* conns = lookup(st, "connections");
  if (conns && conns->type == msgpack::type::ARRAY && conns->via.array.size > 0) {
    s << "  clients:\n";
    for (uint32_t i = 0; i < conns->via.array.size; ++i) {
      const msgpack::object& c = conns->via.array.ptr[i];
      s << "    #" << number_text(lookup(c, "id")) << " uid " << number_text(lookup(c, "uid")) << " gid "
        << number_text(lookup(c, "gid")) << " pid " << number_text(lookup(c, "pid")) << ", "
        << number_text(lookup(c, "requests")) << " requests, " << number_text(lookup(c, "outstanding"))
        << " outstanding";
      const msgpack::object* n = lookup(c, "name");
      if (n && !str_of(*n).empty()) s << " (" << str_of(*n) << ")";
      s << "\n";
    }
  }
  return s.str();
}

std::string prefix_traffic_text(const msgpack::object& st, const char* indent) {
  const msgpack::object* ks = lookup(st, "key_stats");
  const msgpack::object* rows = ks ? lookup(*ks, "prefixes") : nullptr;
  if (!rows || rows->type != msgpack::type::ARRAY) return "";
  std::ostringstream s;
  const double span = number(lookup(*ks, "span_ms"));
  char line[512];
  const msgpack::object* seps = lookup(*ks, "separators");
  snprintf(line, sizeof line,
           "%straffic by key prefix (depth %s, separators \"%s\", last %.0f s; shared-memory hits sampled, misses "
           "the daemon answered):\n", indent,
           number_text(lookup(*ks, "prefix_depth")).c_str(), seps ? key_text(str_of(*seps)).c_str() : "?",
           span >= 0 ? span / 1000 : 0.0);
  s << line;
  if (rows->via.array.size == 0) return s.str() + indent + "  (no lookups)\n";
  size_t width = 6;
  for (uint32_t i = 0; i < rows->via.array.size; ++i)
    if (rows->via.array.ptr[i].type == msgpack::type::ARRAY && rows->via.array.ptr[i].via.array.size == 3)
      width = std::max(width, key_text(str_of(rows->via.array.ptr[i].via.array.ptr[0]), true).size());
  width = std::min<size_t>(width, 48);
  snprintf(line, sizeof line, "%s  %-*s %12s %12s %9s\n", indent, int(width), "PREFIX", "HITS", "MISSES", "HIT RATIO");
  s << line;
  for (uint32_t i = 0; i < rows->via.array.size; ++i) {
    const msgpack::object& r = rows->via.array.ptr[i];
    if (r.type != msgpack::type::ARRAY || r.via.array.size != 3) continue;
    const double h = number(&r.via.array.ptr[1]), m = number(&r.via.array.ptr[2]);
    const std::string p = key_text(str_of(r.via.array.ptr[0]), true);
    char ratio[16];
    snprintf(ratio, sizeof ratio, "%.1f%%", h + m > 0 ? 100 * h / (h + m) : 0.0);
    snprintf(line, sizeof line, "%s  %-*s %12s %12s %9s\n", indent, int(width), p.c_str(),
             number_text(&r.via.array.ptr[1]).c_str(), number_text(&r.via.array.ptr[2]).c_str(), ratio);
    s << line;
  }
  return s.str();
}

std::string status_prometheus(const msgpack::object& st) {
  std::ostringstream s;
  const MetricSpec* table = metric_table();
  for (size_t i = 0; i < kMetricCount; ++i) {
    const MetricSpec& m = table[i];
    const msgpack::object* v = lookup(st, m.name);
    if (!v) continue;
    s << "# HELP nearcache_" << m.name << " " << m.help << "\n";
    s << "# TYPE nearcache_" << m.name << " " << (m.kind == MetricKind::counter ? "counter" : "gauge") << "\n";
    s << "nearcache_" << m.name << " " << number_text(v) << "\n";
  }
  const MetricSpec* rt = redis_metric_table();
  for (size_t i = 0; i < kRedisMetricCount; ++i) {
    const MetricSpec& m = rt[i];
    const msgpack::object* v = lookup(st, m.name);
    if (!v) continue;  // no Redis tier
    s << "# HELP nearcache_" << m.name << " " << m.help << "\n";
    s << "# TYPE nearcache_" << m.name << " " << (m.kind == MetricKind::counter ? "counter" : "gauge") << "\n";
    s << "nearcache_" << m.name << " " << number_text(v) << "\n";
  }
  const msgpack::object* version = lookup(st, "version");
  s << "# HELP nearcache_build_info Version of the daemon\n# TYPE nearcache_build_info gauge\n";
  s << "nearcache_build_info{version=\"" << (version ? std::string(str_of(*version)) : "") << "\"} 1\n";
  return s.str();
}

std::string prometheus_down() {
  return "# HELP nearcache_up 1 while the daemon answers\n# TYPE nearcache_up gauge\nnearcache_up 0\n";
}

}  // namespace nearcache::daemon
