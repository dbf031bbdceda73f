// daemon/config/options.cc — the option table and everything it drives. See options.h.
#include "config/options.h"

#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/program_options.hpp>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include "redis/config.h"

namespace po = boost::program_options;

namespace nearcache::daemon {

namespace {

using C = Config;

using Field = std::variant<std::string Config::*, bool Config::*, unsigned Config::*, uint64_t Config::*>;

// The Redis tier's rows come from redis_options() (names, defaults, help);
// this maps each to its field here.
const std::map<std::string, Field>& redis_fields() {
  static const std::map<std::string, Field> f = {
      {"redis_url", &C::redis_url},
      {"redis_password_file", &C::redis_password_file},
      {"redis_prefix", &C::redis_prefix},
      {"redis_connect_timeout_ms", &C::redis_connect_timeout_ms},
      {"redis_command_timeout_ms", &C::redis_command_timeout_ms},
      {"redis_queue_max_entries", &C::redis_queue_max_entries},
      {"redis_queue_max_bytes", &C::redis_queue_max_bytes},
      {"redis_local_ttl_max_ms", &C::redis_local_ttl_max_ms},
      {"redis_reconnect_min_ms", &C::redis_reconnect_min_ms},
      {"redis_reconnect_max_ms", &C::redis_reconnect_max_ms},
      {"redis_reconnect_jitter_percent", &C::redis_reconnect_jitter_percent},
      {"redis_drain_timeout_ms", &C::redis_drain_timeout_ms},
      {"redis_heartbeat_ms", &C::redis_heartbeat_ms},
      {"redis_lease_poll_min_ms", &C::redis_lease_poll_min_ms},
      {"redis_lease_poll_max_ms", &C::redis_lease_poll_max_ms},
      {"redis_wait_ms", &C::redis_wait_ms},
      {"redis_down", &C::redis_down},
      {"redis_tls_ca_file", &C::redis_tls_ca_file},
      {"redis_tls_cert_file", &C::redis_tls_cert_file},
      {"redis_tls_key_file", &C::redis_tls_key_file},
      {"redis_tls_server_name", &C::redis_tls_server_name},
      {"redis_tls_verify", &C::redis_tls_verify},
  };
  return f;
}

OptType redis_type(const std::string& t) {
  if (t == "secret") return OptType::secret;
  if (t == "path") return OptType::path;
  if (t == "count") return OptType::count;
  if (t == "size") return OptType::size;
  if (t == "boolean") return OptType::boolean;
  return OptType::string;
}

std::vector<OptionSpec> with_redis_rows(std::vector<OptionSpec> rows) {
  for (const auto& r : redis::redis_options()) {
    auto f = redis_fields().find(r.name);
    if (f == redis_fields().end()) abort();  // a row without a field: caught by every test run
    rows.push_back({r.name, redis_type(r.type), r.def, r.reloadable, r.help, f->second});
  }
  return rows;
}

// The table. Order is the order of --help, --print-config and the docs.
const std::vector<OptionSpec> kOptions = with_redis_rows({
    {"config", OptType::path, "", false,
     "Config file to read (INI: `name = value`, `#` comments). Command-line flags override it.", &C::config},
    {"socket", OptType::path, "", false,
     "Unix socket path. Default: <runtime dir>/nearcached.sock, where the runtime dir is "
     "$RUNTIME_DIRECTORY (set by systemd's RuntimeDirectory=), else $XDG_RUNTIME_DIR/nearcache, "
     "/run/nearcache for root, else /tmp/nearcache-<uid>.",
     &C::socket},
    {"socket_mode", OptType::mode, "0660", false, "Permissions of the socket file (octal; never world-writable).",
     &C::socket_mode},
    {"socket_group", OptType::string, "", false, "Group (name or gid) of the socket file. Default: the daemon's.",
     &C::socket_group},
    {"segment", OptType::path, "", false,
     "Shared-memory segment: a file path (default <runtime dir>/nearcached.seg), or a POSIX shm name "
     "(\"/name\") with posix_shm = true. The hints file is <segment>.hints, the lock <segment>.lock.",
     &C::segment},
    {"posix_shm", OptType::boolean, "false", false, "Treat `segment` as a POSIX shared-memory name.", &C::posix_shm},
    {"segment_mode", OptType::mode, "0640", false, "Permissions of the segment (readers need read access).",
     &C::segment_mode},
    {"hints_mode", OptType::mode, "0660", false,
     "Permissions of the hints file (readers record access hints and hit counts in it).", &C::hints_mode},
    {"segment_group", OptType::string, "", false, "Group (name or gid) of the segment and hints file.",
     &C::segment_group},
    {"segment_size", OptType::size, "64M", false, "Size of the segment (K, M, G suffixes).", &C::segment_size},
    {"key_limit", OptType::size, "1024", false, "Longest key in bytes (at most 65535).", &C::key_limit},
    {"value_limit", OptType::size, "1M", false, "Largest value in bytes.", &C::value_limit},
    {"expected_item_size", OptType::size, "256", false,
     "Typical key + value size; sizes the index (segment_size / this = entries planned for).",
     &C::expected_item_size},
    {"max_ttl_ms", OptType::count, "0", true,
     "Longest TTL in milliseconds; every TTL, \"no expiry\" included, is clamped to it. 0 = no limit.",
     &C::max_ttl_ms},
    {"max_frame_bytes", OptType::size, "", false,
     "Largest request frame. Default: 4 MiB + key_limit + value_limit.", &C::max_frame_bytes},
    {"max_outstanding", OptType::count, "4096", true,
     "Requests per connection received and not yet answered (waiting leases, clears) before "
     "TOO_MANY_REQUESTS.",
     &C::max_outstanding},
    {"max_output_bytes", OptType::size, "64M", true,
     "Replies a connection has not read; beyond this the client is disconnected as a slow reader.",
     &C::max_output_bytes},
    {"max_connections", OptType::count, "4096", true, "Simultaneous client connections; more are refused.",
     &C::max_connections},
    {"allow_users", OptType::list, "", true,
     "Comma list of user names or uids allowed to connect (with allow_groups); empty = no list. "
     "The daemon's own user is always allowed.",
     &C::allow_users},
    {"allow_groups", OptType::list, "", true,
     "Comma list of group names or gids whose members (primary group) may connect; empty = no list.",
     &C::allow_groups},
    {"heartbeat_interval_ms", OptType::count, "100", true,
     "How often the daemon writes its heartbeat into the segment header.", &C::heartbeat_interval_ms},
    {"heartbeat_grace_ms", OptType::count, "2000", false,
     "Readers treat a segment whose heartbeat is older than this as unavailable (written in the "
     "segment header).",
     &C::heartbeat_grace_ms},
    {"max_lease_ms", OptType::count, "300000", true, "Longest lease a LEASE may ask for (longer ones are clamped).",
     &C::max_lease_ms},
    {"max_wait_ms", OptType::count, "300000", true,
     "Longest a LEASE waiter may wait (longer waits are clamped).", &C::max_wait_ms},
    {"log_level", OptType::string, "info", true, "trace, debug, info, warn, error, critical or off.",
     &C::log_level},
});

bool parse_bool(const std::string& s, bool* out) {
  static const std::set<std::string> yes = {"1", "true", "yes", "on"}, no = {"0", "false", "no", "off"};
  if (yes.count(s)) return *out = true, true;
  if (no.count(s)) return *out = false, true;
  return false;
}

bool parse_count(const std::string& s, uint64_t* out) {
  if (s.empty() || s.size() > 20) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    const uint64_t d = uint64_t(c - '0');
    if (v > (UINT64_MAX - d) / 10) return false;
    v = v * 10 + d;
  }
  *out = v;
  return true;
}

bool parse_mode(const std::string& s, unsigned* out) {
  if (s.empty() || s.size() > 4) return false;
  unsigned v = 0;
  for (char c : s) {
    if (c < '0' || c > '7') return false;
    v = v * 8 + unsigned(c - '0');
  }
  *out = v;
  return true;
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t") - b + 1);
}

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!(item = trim(item)).empty()) out.push_back(item);
  return out;
}

// Stores one textual value into the Config field of `o`.
bool assign(Config* c, const OptionSpec& o, const std::string& raw, std::string* err) {
  const std::string v = o.type == OptType::path || o.type == OptType::string || o.type == OptType::secret
                            ? raw
                            : trim(raw);
  auto fail = [&](const char* what) {
    *err = std::string("option ") + o.name + ": " + what + ", got \"" + raw + "\"";
    return false;
  };
  switch (o.type) {
    case OptType::string:
    case OptType::path:
    case OptType::list:
    case OptType::secret:
      c->*std::get<std::string Config::*>(o.field) = v;
      return true;
    case OptType::boolean:
      if (!parse_bool(v, &(c->*std::get<bool Config::*>(o.field)))) return fail("expected true or false");
      return true;
    case OptType::mode:
      if (!parse_mode(v, &(c->*std::get<unsigned Config::*>(o.field)))) return fail("expected an octal mode like 0660");
      return true;
    case OptType::size:
      if (v.empty() && o.def[0] == '\0') return c->*std::get<uint64_t Config::*>(o.field) = 0, true;
      if (!parse_size(v, &(c->*std::get<uint64_t Config::*>(o.field))))
        return fail("expected a size in bytes with an optional K, M or G suffix");
      return true;
    case OptType::count:
      if (!parse_count(v, &(c->*std::get<uint64_t Config::*>(o.field)))) return fail("expected a non-negative integer");
      return true;
  }
  return fail("unknown type");
}

bool validate(Config* c, std::string* err) {
  auto bad = [&](const std::string& m) {
    *err = m;
    return false;
  };
  static const std::set<std::string> levels = {"trace", "debug", "info", "warn", "error", "critical", "off"};
  if (!levels.count(c->log_level)) return bad("option log_level: unknown level \"" + c->log_level + "\"");
  if (c->key_limit < 1 || c->key_limit > 65535) return bad("option key_limit: must be between 1 and 65535");
  if (c->value_limit < 1 || c->value_limit > (1ull << 31))
    return bad("option value_limit: must be between 1 and 2G");
  if (c->expected_item_size < 32) return bad("option expected_item_size: must be at least 32");
  for (auto [name, mode] : {std::pair{"socket_mode", c->socket_mode}, std::pair{"segment_mode", c->segment_mode},
                            std::pair{"hints_mode", c->hints_mode}})
    if (mode & 0002) return bad(std::string("option ") + name + ": must not be world-writable");
  if (c->socket_mode & 0111 || c->segment_mode & 0111 || c->hints_mode & 0111)
    return bad("modes must not carry execute bits");
  if (c->max_frame_bytes == 0) c->max_frame_bytes = (4ull << 20) + c->key_limit + c->value_limit;
  if (c->max_frame_bytes < 64) return bad("option max_frame_bytes: must be at least 64");
  if (c->max_outstanding < 1) return bad("option max_outstanding: must be at least 1");
  if (c->max_connections < 1) return bad("option max_connections: must be at least 1");
  if (c->max_output_bytes < 4096) return bad("option max_output_bytes: must be at least 4K");
  if (c->heartbeat_interval_ms < 1 || c->heartbeat_interval_ms > 60000)
    return bad("option heartbeat_interval_ms: must be between 1 and 60000");
  if (c->heartbeat_grace_ms < 2 * c->heartbeat_interval_ms || c->heartbeat_grace_ms > UINT32_MAX)
    return bad("option heartbeat_grace_ms: must be at least twice heartbeat_interval_ms");
  if (c->max_lease_ms < 1) return bad("option max_lease_ms: must be at least 1");
  if (c->socket.size() >= 108) return bad("option socket: path longer than 107 bytes: " + c->socket);
  redis::DownPolicy down;
  if (!redis::parse_down_policy(c->redis_down, &down, err)) return false;
  if (!c->redis_url.empty()) {
    redis::Endpoint ep;
    if (!redis::validate(redis_config(*c), &ep, err)) return false;
  }
  std::vector<uint32_t> ids;
  if (!resolve_users(c->allow_users, &ids, err) || !resolve_groups(c->allow_groups, &ids, err)) return false;
  int64_t gid;
  if (!resolve_group(c->socket_group, &gid, err) || !resolve_group(c->segment_group, &gid, err)) return false;
  return true;
}

// What an empty default means: derived from other settings, or nothing at all.
const char* empty_default(const OptionSpec& o) {
  if (std::string(o.name) == "config") return "none";
  return o.type == OptType::path || o.type == OptType::size ? "automatic" : "none";
}

po::options_description describe(bool with_actions) {
  po::options_description d("nearcached options");
  for (const auto& o : kOptions) {
    if (o.type == OptType::boolean) d.add_options()(o.name, po::value<std::string>()->implicit_value("true"), o.help);
    else d.add_options()(o.name, po::value<std::string>(), o.help);
  }
  if (with_actions) {
    d.add_options()("help,h", "print this help and exit");
    d.add_options()("version", "print the version and exit");
    d.add_options()("print-config", "print the effective configuration (a valid config file) and exit");
    d.add_options()("print-config-doc", "print doc/configuration.md (generated from the option table) and exit");
    d.add_options()("print-socket-banner", "also print where the socket is, on stdout, once listening");
  }
  return d;
}

}  // namespace

const std::vector<OptionSpec>& option_table() { return kOptions; }

const OptionSpec* find_option(const std::string& name) {
  for (const auto& o : kOptions)
    if (name == o.name) return &o;
  return nullptr;
}

const char* opt_type_name(OptType t) {
  switch (t) {
    case OptType::string: return "string";
    case OptType::path: return "path";
    case OptType::boolean: return "bool";
    case OptType::size: return "size";
    case OptType::count: return "integer";
    case OptType::mode: return "mode";
    case OptType::list: return "list";
    case OptType::secret: return "url";
  }
  return "?";
}

bool parse_size(const std::string& in, uint64_t* out) {
  std::string s = trim(in);
  if (s.empty()) return false;
  uint64_t mult = 1;
  switch (s.back()) {
    case 'k': case 'K': mult = 1ull << 10; break;
    case 'm': case 'M': mult = 1ull << 20; break;
    case 'g': case 'G': mult = 1ull << 30; break;
    default: break;
  }
  if (mult != 1) s.pop_back();
  uint64_t v;
  if (!parse_count(s, &v) || (v != 0 && mult > UINT64_MAX / v)) return false;
  *out = v * mult;
  return true;
}

std::string format_option(const Config& c, const OptionSpec& o) {
  switch (o.type) {
    case OptType::string:
    case OptType::path:
    case OptType::list:
      return c.*std::get<std::string Config::*>(o.field);
    case OptType::secret: {
      // Credentials in a URL (redis://user:password@host) are masked.
      std::string v = c.*std::get<std::string Config::*>(o.field);
      const auto scheme = v.find("://"), at = v.rfind('@');
      if (scheme != std::string::npos && at != std::string::npos && at > scheme)
        v = v.substr(0, scheme + 3) + "***" + v.substr(at);
      return v;
    }
    case OptType::boolean:
      return c.*std::get<bool Config::*>(o.field) ? "true" : "false";
    case OptType::mode: {
      char buf[8];
      snprintf(buf, sizeof buf, "%04o", c.*std::get<unsigned Config::*>(o.field));
      return buf;
    }
    case OptType::size: {
      const uint64_t v = c.*std::get<uint64_t Config::*>(o.field);
      if (v != 0 && v % (1ull << 30) == 0) return std::to_string(v >> 30) + "G";
      if (v != 0 && v % (1ull << 20) == 0) return std::to_string(v >> 20) + "M";
      if (v != 0 && v % (1ull << 10) == 0) return std::to_string(v >> 10) + "K";
      return std::to_string(v);
    }
    case OptType::count:
      return std::to_string(c.*std::get<uint64_t Config::*>(o.field));
  }
  return "";
}

bool parse_command_line(int argc, char** argv, Invocation* inv, std::string* err) {
  try {
    po::variables_map vm;
    po::store(po::command_line_parser(argc, argv).options(describe(true)).style(
                  po::command_line_style::unix_style & ~po::command_line_style::allow_guessing).run(),
              vm);
    inv->help = vm.count("help");
    inv->version = vm.count("version");
    inv->print_config = vm.count("print-config");
    inv->print_config_doc = vm.count("print-config-doc");
    inv->print_socket_banner = vm.count("print-socket-banner");
    for (const auto& o : kOptions)
      if (vm.count(o.name)) inv->flags[o.name] = vm[o.name].as<std::string>();
    return true;
  } catch (const std::exception& e) {
    *err = e.what();
    return false;
  }
}

bool load_config(const std::map<std::string, std::string>& flags, Config* out, std::string* err) {
  Config c;
  for (const auto& o : kOptions)
    if (!assign(&c, o, o.def, err)) return false;
  auto it = flags.find("config");
  if (it != flags.end() && !it->second.empty()) {
    c.config = it->second;
    std::ifstream f(c.config);
    if (!f) {
      *err = "cannot read config file " + c.config + ": " + strerror(errno);
      return false;
    }
    try {
      const auto parsed = po::parse_config_file(f, describe(false), false);
      for (const auto& opt : parsed.options) {
        const OptionSpec* o = find_option(opt.string_key);
        if (!o || opt.value.empty()) continue;
        if (!assign(&c, *o, opt.value.front(), err)) {
          *err = c.config + ": " + *err;
          return false;
        }
      }
    } catch (const std::exception& e) {
      *err = c.config + ": " + e.what();
      return false;
    }
  }
  for (const auto& [name, value] : flags) {
    const OptionSpec* o = find_option(name);
    if (!o) {
      *err = "unknown option " + name;
      return false;
    }
    if (!assign(&c, *o, value, err)) return false;
  }
  if (c.socket.empty()) c.socket = default_runtime_dir(true) + "/nearcached.sock";
  if (c.segment.empty())
    c.segment = c.posix_shm ? "/nearcache-" + std::to_string(getuid()) : default_runtime_dir(true) + "/nearcached.seg";
  if (!validate(&c, err)) return false;
  *out = c;
  return true;
}

redis::Config redis_config(const Config& c) {
  redis::Config r;
  r.url = c.redis_url;
  r.prefix = c.redis_prefix;
  r.password_file = c.redis_password_file;
  r.connect_timeout_ms = c.redis_connect_timeout_ms;
  r.command_timeout_ms = c.redis_command_timeout_ms;
  r.queue_max_entries = c.redis_queue_max_entries;
  r.queue_max_bytes = c.redis_queue_max_bytes;
  r.local_ttl_max_ms = c.redis_local_ttl_max_ms;
  r.reconnect_min_ms = c.redis_reconnect_min_ms;
  r.reconnect_max_ms = c.redis_reconnect_max_ms;
  r.reconnect_jitter_percent = c.redis_reconnect_jitter_percent;
  r.drain_timeout_ms = c.redis_drain_timeout_ms;
  r.heartbeat_ms = c.redis_heartbeat_ms;
  r.lease_poll_min_ms = c.redis_lease_poll_min_ms;
  r.lease_poll_max_ms = c.redis_lease_poll_max_ms;
  r.wait_ms = c.redis_wait_ms;
  r.tls_ca_file = c.redis_tls_ca_file;
  r.tls_cert_file = c.redis_tls_cert_file;
  r.tls_key_file = c.redis_tls_key_file;
  r.tls_server_name = c.redis_tls_server_name;
  r.tls_verify = c.redis_tls_verify;
  std::string ignored;
  redis::parse_down_policy(c.redis_down, &r.down, &ignored);
  return r;
}

std::string help_text(const char* argv0) {
  std::ostringstream s;
  s << "Usage: " << argv0 << " [--config=FILE] [--name=value ...]\n"
    << "nearcached: the nearcache daemon. Options (also valid in the config file as `name = value`):\n\n";
  for (const auto& o : kOptions) {
    s << "  --" << o.name << "=<" << opt_type_name(o.type) << ">";
    s << "  (default: " << (o.def[0] ? o.def : empty_default(o)) << (o.reloadable ? "; reloaded on SIGHUP" : "") << ")\n";
    s << "      " << o.help << "\n";
  }
  s << "\n  --print-config         print the effective configuration and exit\n"
    << "  --print-socket-banner  print the socket path on stdout once listening\n"
    << "  --version              print the version and exit\n"
    << "  --help                 this text\n";
  return s.str();
}

std::string config_text(const Config& c) {
  std::ostringstream s;
  s << "# nearcached configuration (effective values)\n";
  for (const auto& o : kOptions) {
    if (std::string(o.name) == "config") continue;
    s << "\n# " << o.help << (o.reloadable ? " [reloadable]" : "") << "\n";
    s << o.name << " = " << format_option(c, o) << "\n";
  }
  return s.str();
}

std::string config_markdown() {
  std::ostringstream s;
  s << "# nearcached configuration\n\n"
    << "<!-- Generated by `nearcached --print-config-doc` from daemon/options.cc; do not edit. -->\n\n"
    << "Every option can be given in the config file (`--config=FILE`, INI style: `name = value`, `#` "
       "comments) or as a flag `--name=value`; flags override the file. `nearcached --print-config` prints "
       "the effective configuration as a valid config file. On SIGHUP the daemon re-reads the file and "
       "applies the options marked reloadable; it logs every other change as needing a restart.\n\n"
    << "Sizes take K, M and G suffixes (powers of 1024). Modes are octal.\n\n"
    << "| option | type | default | reloadable | meaning |\n| --- | --- | --- | --- | --- |\n";
  for (const auto& o : kOptions) {
    std::string help;
    for (char ch : std::string(o.help)) {
      if (ch == '|') help += "\\|";
      else if (ch == '<') help += "&lt;";
      else if (ch == '>') help += "&gt;";
      else help += ch;
    }
    s << "| `" << o.name << "` | " << opt_type_name(o.type) << " | " << (o.def[0] ? std::string("`") + o.def + "`" : empty_default(o))
      << " | " << (o.reloadable ? "yes" : "no") << " | " << help << " |\n";
  }
  s << "\n## Default paths\n\n"
    << "With no `socket` or `segment` option the daemon uses a runtime directory: `$RUNTIME_DIRECTORY` "
       "when systemd set it (`RuntimeDirectory=`; the first directory when it lists several), else "
       "`$XDG_RUNTIME_DIR/nearcache` when `XDG_RUNTIME_DIR` is set, else `/run/nearcache` for root, else "
       "`/tmp/nearcache-<uid>`. It is created with mode 0750 when missing. The socket is "
       "`<dir>/nearcached.sock`, the segment `<dir>/nearcached.seg` (hints `<segment>.hints`, lock "
       "`<segment>.lock`). The CLI and the Python client resolve the same default, except "
       "`$RUNTIME_DIRECTORY` (in a client it is the client's own unit's), and honour `NEARCACHE_SOCKET`.\n\n"
    << "## Liveness and the grace period\n\n"
    << "The daemon writes a heartbeat (CLOCK_MONOTONIC milliseconds) into the segment header every "
       "`heartbeat_interval_ms`. A reader that finds the heartbeat older than `heartbeat_grace_ms` (also "
       "written in the header), or the segment marked stopped, treats the segment as unavailable and "
       "uses the socket (or reports misses) until a daemon publishes a new generation. After `kill -9`, "
       "readers therefore stop serving the old table within `heartbeat_grace_ms` (2 s by default); a new "
       "daemon replaces the stale socket and segment on start.\n\n"
    << "## Signals, exit status, systemd\n\n"
    << "- SIGTERM or SIGINT: stop accepting (the socket is removed), finish pending CLEARs, answer waiting "
       "LEASEs and Redis reads with `SHUTTING_DOWN`, write the replies already produced, close every "
       "connection (at most 5 s later, or `redis_drain_timeout_ms` when that is longer), flush the Redis "
       "write-behind queue (for at most `redis_drain_timeout_ms`; what is left is logged as lost), mark the "
       "segment stopped, remove its names, exit 0. Requests that arrive after the signal get "
       "`SHUTTING_DOWN`; a second signal closes every connection at once.\n"
    << "- SIGHUP: re-read the config file; apply the reloadable options; log each other change as needing a "
       "restart. A file that does not parse changes nothing (logged). `redis_password_file` is read again; "
       "the new password is used from the next Redis connection.\n"
    << "- A second daemon on the same socket (one that answers) or the same segment (its lock is held) "
       "refuses to start, exit 1. A socket nobody answers on is stale and replaced; a non-socket file at the "
       "socket path is never touched.\n"
    << "- Exit status: 0 after a clean stop; 1 when the daemon cannot start (socket or segment in use, "
       "permissions, memory); 2 for a bad command line or configuration (a bad `redis_url`, a "
       "`redis_password_file` that cannot be read or that others may read, included). Redis being "
       "unreachable is not an error: the daemon starts, serves its table and reconnects.\n"
    << "- With `NOTIFY_SOCKET` set (systemd `Type=notify`) the daemon sends `READY=1` once listening and "
       "`STOPPING=1` when it begins to stop. With `JOURNAL_STREAM` set, log lines carry a syslog priority "
       "prefix (`<6>`) instead of a timestamp.\n\n"
    << "## Limits and flow control\n\n"
    << "- A frame longer than `max_frame_bytes` is refused as soon as a msgpack header shows it "
       "(`FRAME_TOO_LARGE`, connection closed), before its bytes are buffered.\n"
    << "- `max_outstanding` counts a connection's requests that wait (LEASE waiters, CLEARs in progress); "
       "beyond it requests get `TOO_MANY_REQUESTS`.\n"
    << "- `max_output_bytes` bounds the replies a client has not read; a client over it is disconnected "
       "(logged, `slow_clients_total`). A GET_MANY whose reply alone would exceed it disconnects the client "
       "too, before the reply is built.\n"
    << "- `max_connections`: one more connection gets `[nil, UNAVAILABLE, message]` and is closed.\n"
    << "- At most 256 CLEARs can be in progress at once, daemon-wide; more get `TOO_MANY_REQUESTS` until "
       "some complete (the table keeps the removed counts of its last 256 clears).\n"
    << "- CLEAR and the expiry sweep run in slices (about 2 ms of work per loop turn, 1 ms per 100 ms for "
       "expiry), so the heartbeat and other clients are never held up; `loop_lag_max_ms` in the status shows "
       "the worst loop delay seen.\n"
    << "\n## The Redis tier\n\n"
    << "The `redis_*` options configure it; `doc/redis.md` describes what it guarantees, what "
       "`redis_down = local` can lose, TLS (`rediss://`, the `redis_tls_*` options), and the limits that "
       "remain (no RESP3, no Sentinel or Cluster).\n";
  return s.str();
}

std::string default_runtime_dir(bool daemon) {
  // systemd's RuntimeDirectory= sets it to the directory it made for the unit
  // (a colon-separated list when the unit names several). Only the daemon's:
  // in a client it names the client's own unit's directory.
  const char* rt = daemon ? getenv("RUNTIME_DIRECTORY") : nullptr;
  if (rt && *rt) {
    std::string dir(rt);
    return dir.substr(0, dir.find(':'));
  }
  const char* xdg = getenv("XDG_RUNTIME_DIR");
  if (xdg && *xdg) return std::string(xdg) + "/nearcache";
  if (getuid() == 0) return "/run/nearcache";
  return "/tmp/nearcache-" + std::to_string(getuid());
}

std::string default_socket_path() { return default_runtime_dir(false) + "/nearcached.sock"; }

bool ensure_runtime_dir(const std::string& dir, std::string* err) {
  if (mkdir(dir.c_str(), 0750) != 0 && errno != EEXIST) {
    *err = "cannot create runtime directory " + dir + ": " + strerror(errno);
    return false;
  }
  struct stat st;
  if (lstat(dir.c_str(), &st) != 0) {
    *err = "cannot stat " + dir + ": " + strerror(errno);
    return false;
  }
  if (!S_ISDIR(st.st_mode)) {
    *err = dir + " is not a directory (a symlink or a file is refused)";
    return false;
  }
  // In a shared directory such as /tmp another user could have made it first.
  if (st.st_uid != getuid() && st.st_uid != 0) {
    *err = dir + " belongs to uid " + std::to_string(st.st_uid) + ", not to this user";
    return false;
  }
  if (st.st_mode & 0002) {
    *err = dir + " is world-writable; refusing to put the socket there";
    return false;
  }
  return true;
}

namespace {
bool resolve_ids(const std::string& list, bool users, std::vector<uint32_t>* out, std::string* err) {
  for (const auto& item : split_list(list)) {
    uint64_t id;
    if (parse_count(item, &id) && id < UINT32_MAX) {
      out->push_back(uint32_t(id));
      continue;
    }
    if (users) {
      struct passwd pw, *res = nullptr;
      char buf[4096];
      if (getpwnam_r(item.c_str(), &pw, buf, sizeof buf, &res) == 0 && res) {
        out->push_back(res->pw_uid);
        continue;
      }
    } else {
      struct group gr, *res = nullptr;
      char buf[16384];
      if (getgrnam_r(item.c_str(), &gr, buf, sizeof buf, &res) == 0 && res) {
        out->push_back(res->gr_gid);
        continue;
      }
    }
    *err = std::string("unknown ") + (users ? "user" : "group") + " \"" + item + "\"";
    return false;
  }
  return true;
}
}  // namespace

bool resolve_users(const std::string& list, std::vector<uint32_t>* out, std::string* err) {
  return resolve_ids(list, true, out, err);
}

bool resolve_groups(const std::string& list, std::vector<uint32_t>* out, std::string* err) {
  return resolve_ids(list, false, out, err);
}

bool resolve_group(const std::string& name, int64_t* gid, std::string* err) {
  *gid = -1;
  if (trim(name).empty()) return true;
  std::vector<uint32_t> ids;
  if (!resolve_groups(name, &ids, err)) return false;
  if (ids.size() != 1) {
    *err = "expected one group, got \"" + name + "\"";
    return false;
  }
  *gid = ids[0];
  return true;
}

}  // namespace nearcache::daemon
