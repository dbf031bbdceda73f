// daemon/config/options.cc — the option table, its validators, and everything
// the rows drive (files, flags, SIGHUP, --help, --print-config, the docs). See options.h.
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

namespace po = boost::program_options;

namespace nearcache::daemon {

namespace {

using C = Config;

std::vector<OptionSpec> with_redis_rows(std::vector<OptionSpec> rows) {
  rows.insert(rows.end(), redis::redis_options().begin(), redis::redis_options().end());
  return rows;
}

// The rules that tie options together, or that bounds cannot say. Each
// returns false with *err set; validate() runs them after the rows' bounds.
bool known_log_level(Config* c, std::string* err) {
  static const std::set<std::string> levels = {"trace", "debug", "info", "warn", "error", "critical", "off"};
  if (levels.count(c->log_level)) return true;
  *err = "option log_level: unknown level \"" + c->log_level + "\"";
  return false;
}

bool key_stats_separators_set(Config* c, std::string* err) {
  if (!c->key_stats_separators.empty() && c->key_stats_separators.size() <= 8) return true;
  *err = "option key_stats_separators: 1 to 8 characters (got " + std::to_string(c->key_stats_separators.size()) + ")";
  return false;
}

bool safe_modes(Config* c, std::string* err) {
  for (auto [name, mode] : {std::pair{"socket_mode", c->socket_mode}, std::pair{"segment_mode", c->segment_mode}})
    if (mode & 0002) {
      *err = std::string("option ") + name + ": must not be world-writable";
      return false;
    }
  if (c->socket_mode & 0111 || c->segment_mode & 0111) {
    *err = "modes must not carry execute bits";
    return false;
  }
  return true;
}

bool heartbeat_grace(Config* c, std::string* err) {
  // Readers would call a live daemon dead between two beats.
  if (c->heartbeat_grace_ms >= 2 * c->heartbeat_interval_ms) return true;
  *err = "option heartbeat_grace_ms: must be at least twice heartbeat_interval_ms";
  return false;
}

bool socket_path_fits(Config* c, std::string* err) {
  if (c->socket.size() < 108) return true;  // sockaddr_un's sun_path
  *err = "option socket: path longer than 107 bytes: " + c->socket;
  return false;
}

bool redis_tier(Config* c, std::string* err) {
  // Without redis_url (or the Sentinel options) the other redis_* options are not checked.
  redis::Endpoint ep;
  return !c->redis.enabled() || redis::validate(c->redis, &ep, err);
}

bool known_ids(Config* c, std::string* err) {
  std::vector<uint32_t> ids;
  int64_t gid;
  return resolve_users(c->allow_users, &ids, err) && resolve_groups(c->allow_groups, &ids, err) &&
         resolve_group(c->socket_group, &gid, err) && resolve_group(c->segment_group, &gid, err);
}

// Empty paths and sizes are automatic: derived from other options.
void resolve_automatic(Config* c) {
  if (c->socket.empty()) c->socket = default_runtime_dir(true) + "/nearcached.sock";
  if (c->segment.empty())
    c->segment =
        c->posix_shm ? "/nearcache-" + std::to_string(getuid()) : default_runtime_dir(true) + "/nearcached.seg";
  redis::set_relay_bounds(&c->redis, c->value_limit);  // the largest value this daemon relays (redis/config.h)
  // A SET of a value that goes to Redis only must fit in one frame.
  if (c->max_frame_bytes == 0) c->max_frame_bytes = (4ull << 20) + c->key_limit + c->redis.relay_max_bytes;
}

// The table: name, type, default, min, max, reloadable, help, field. Order is
// the order of --help, --print-config and the docs; the Redis tier's rows
// (redis/config.cc) come last.
const std::vector<OptionSpec>& table() {
  static const std::vector<OptionSpec> rows = with_redis_rows({
      {"config", OptType::path, "", 0, 0, false,
       "Config file to read (INI: `name = value`, `#` comments). Command-line flags override it.", &C::config},
      {"socket", OptType::path, "", 0, 0, false,
       "Unix socket path. Default: <runtime dir>/nearcached.sock, where the runtime dir is "
       "$RUNTIME_DIRECTORY (set by systemd's RuntimeDirectory=), else $XDG_RUNTIME_DIR/nearcache, "
       "/run/nearcache for root, else /tmp/nearcache-<uid>.",
       &C::socket},
      {"socket_mode", OptType::mode, "0660", 0, 0, false,
       "Permissions of the socket file (octal; never world-writable).", &C::socket_mode},
      {"socket_group", OptType::string, "", 0, 0, false,
       "Group (name or gid) of the socket file. Default: the daemon's.", &C::socket_group},
      {"segment", OptType::path, "", 0, 0, false,
       "Shared-memory segment: a file path (default <runtime dir>/nearcached.seg), or a POSIX shm name "
       "(\"/name\") with posix_shm = true. The lock is <segment>.lock.",
       &C::segment},
      {"posix_shm", OptType::boolean, "false", 0, 0, false, "Treat `segment` as a POSIX shared-memory name.",
       &C::posix_shm},
      {"segment_mode", OptType::mode, "0640", 0, 0, false,
       "Permissions of the segment (readers need read access).", &C::segment_mode},
      {"hints_mode", OptType::mode, "0660", 0, 0, false,
       "Deprecated and ignored: layout 2 has no hints file (readers report hits in their own hit regions); "
       "accepted so that older configuration files still load. Remove it from yours.", &C::hints_mode},
      {"segment_group", OptType::string, "", 0, 0, false, "Group (name or gid) of the segment.",
       &C::segment_group},
      {"segment_size", OptType::size, "64M", 0, kNoMax, false, "Size of the segment (K, M, G suffixes).",
       &C::segment_size},
      {"warm_restart", OptType::boolean, "true", 0, 0, false,
       "Adopt the table a previous daemon left in the segment (after a stop or a crash) when its layout, "
       "segment_size, expected_item_size and limits match, instead of starting empty; after a segment_size "
       "change, copy the entries that fit into the new table when the filesystem holds both; the segment stays "
       "in place when the daemon stops (see doc/operations.md). false: every start is cold and a stop removes it.",
       &C::warm_restart},
      {"key_limit", OptType::size, "1024", 1, 65535, false, "Longest key in bytes (at most 65535).",
       &C::key_limit},
      {"value_limit", OptType::size, "1M", 1, 1ull << 31, false, "Largest value in bytes.", &C::value_limit},
      {"expected_item_size", OptType::size, "256", 32, kNoMax, false,
       "Typical key + value size; sizes the index (segment_size / this = entries planned for).",
       &C::expected_item_size},
      {"authoritative", OptType::boolean, "true", 0, 0, false,
       "Without a Redis tier, state in the segment header that the table is the whole truth, so that "
       "clients answer a miss there without asking the daemon (their LOCAL_MISSES option). false: every "
       "miss asks the daemon. Ignored with redis_url (a miss there is never definite).",
       &C::authoritative},
      {"max_ttl_ms", OptType::count, "0", 0, kNoMax, true,
       "Longest TTL in milliseconds; every TTL, \"no expiry\" included, is clamped to it. 0 = no limit.",
       &C::max_ttl_ms},
      {"max_frame_bytes", OptType::size, "", 64, kNoMax, false,
       "Largest request frame. Default: 4 MiB + key_limit + the largest value a SET may carry: value_limit, or "
       "with a Redis tier the largest it relays (redis_large_values, redis_relay_max_bytes).",
       &C::max_frame_bytes},
      {"max_outstanding", OptType::count, "4096", 1, kNoMax, true,
       "Requests per connection received and not yet answered (waiting leases, clears) before "
       "TOO_MANY_REQUESTS.",
       &C::max_outstanding},
      {"max_output_bytes", OptType::size, "64M", 4096, kNoMax, true,
       "Replies a connection has not read; at this the daemon stops executing its requests (and reading "
       "them) until it reads, so it is exceeded by at most one reply.",
       &C::max_output_bytes},
      {"max_output_bytes_total", OptType::size, "256M", 0, kNoMax, true,
       "Replies all connections together have not read; at this the connection holding the most is "
       "disconnected as a slow reader. 0 = no global bound.",
       &C::max_output_bytes_total},
      {"slow_reader_timeout_ms", OptType::count, "3000", 0, kNoMax, true,
       "A connection at max_output_bytes that reads none of its replies for this long is disconnected as "
       "a slow reader. 0 = never (it stays paused).",
       &C::slow_reader_timeout_ms},
      {"max_connections", OptType::count, "4096", 1, kNoMax, true,
       "Simultaneous client connections; more are refused.", &C::max_connections},
      {"allow_users", OptType::list, "", 0, 0, true,
       "Comma list of user names or uids allowed to connect (with allow_groups); empty = no list. "
       "The daemon's own user is always allowed.",
       &C::allow_users},
      {"allow_groups", OptType::list, "", 0, 0, true,
       "Comma list of group names or gids whose members (primary group) may connect; empty = no list.",
       &C::allow_groups},
      {"heartbeat_interval_ms", OptType::count, "100", 1, 60000, true,
       "How often the daemon writes its heartbeat into the segment header.", &C::heartbeat_interval_ms},
      {"heartbeat_grace_ms", OptType::count, "2000", 0, UINT32_MAX, false,
       "Readers treat a segment whose heartbeat is older than this as unavailable (written in the "
       "segment header).",
       &C::heartbeat_grace_ms},
      {"max_lease_ms", OptType::count, "300000", 1, kNoMax, true,
       "Longest lease a LEASE may ask for (longer ones are clamped).", &C::max_lease_ms},
      {"max_wait_ms", OptType::count, "300000", 0, kNoMax, true,
       "Longest a LEASE waiter may wait (longer waits are clamped).", &C::max_wait_ms},
      {"max_lock_ms", OptType::count, "3600000", 1, kNoMax, true,
       "Longest a lock is held: the TTL of a LOCK without one (a Python lock with timeout=None), and the "
       "bound of every lock's TTL and extension.",
       &C::max_lock_ms},
      {"log_level", OptType::string, "info", 0, 0, true, "trace, debug, info, warn, error, critical or off.",
       &C::log_level},
      {"key_stats", OptType::boolean, "true", 0, 0, true,
       "Count hits and misses by key and key prefix (STATUS key_stats: `nearcache hotkeys`, the prefix table of "
       "`nearcache status`). Shared-memory hits are sampled from the readers' hit rings on the daemon's tick; "
       "the hit path is the same either way.",
       &C::key_stats},
      {"key_stats_prefix_depth", OptType::count, "1", 1, 16, true,
       "A key's prefix for key_stats: the key up to its DEPTH-th separator (its last one when it has fewer).",
       &C::key_stats_prefix_depth},
      {"key_stats_separators", OptType::string, ":", 0, 0, true,
       "The characters that end a key prefix (1 to 8). Django's keys are KEY_PREFIX:VERSION:key, with dots in "
       "its own keys (views.decorators.cache...): depth 3 with `:.` groups them by the first part of the key.",
       &C::key_stats_separators},
  });
  return rows;
}

// A row of the Redis tier (checked by redis::validate, and only with redis_url set).
bool tier_row(const OptionSpec& o) {
  return std::visit([](auto m) { return !std::is_same_v<typename detail::member_of<decltype(m)>::type, Config>; },
                    o.field);
}

bool validate(Config* c, std::string* err) {
  resolve_automatic(c);
  for (const auto& o : table())
    if (!tier_row(o) && !check_option_bounds(*c, o, err)) return false;
  for (auto rule : {known_log_level, safe_modes, heartbeat_grace, socket_path_fits, redis_tier, known_ids,
                    key_stats_separators_set})
    if (!rule(c, err)) return false;
  return true;
}

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!(item = trim(item)).empty()) out.push_back(item);
  return out;
}

// What an empty default means: derived from other settings, or nothing at all.
const char* empty_default(const OptionSpec& o) {
  if (std::string(o.name) == "config") return "none";
  return o.type == OptType::path || o.type == OptType::size ? "automatic" : "none";
}

std::string default_text(const OptionSpec& o) { return o.def[0] ? o.def : empty_default(o); }

// "1 to 65535", "at least 4K"; "" for an option without bounds.
std::string bounds_text(const OptionSpec& o) {
  if (o.type != OptType::size && o.type != OptType::count) return "";
  if (o.max != kNoMax) return format_value(o, o.min) + " to " + format_value(o, o.max);
  return o.min ? "at least " + format_value(o, o.min) : "";
}

po::options_description describe(bool with_actions) {
  po::options_description d("nearcached options");
  for (const auto& o : table()) {
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

Config::Config() {
  std::string err;
  for (const auto& o : table())
    if (!assign_option(this, o, o.def, &err)) abort();  // a bad default: caught by every test run
}

const std::vector<OptionSpec>& option_table() { return table(); }

const OptionSpec* find_option(const std::string& name) {
  for (const auto& o : table())
    if (name == o.name) return &o;
  return nullptr;
}

uint64_t option_number(const Config& c, const OptionSpec& o) {
  uint64_t n = 0;
  visit_field(c, o.field, [&](const auto& v) {
    if constexpr (std::is_same_v<std::decay_t<decltype(v)>, uint64_t>) n = v;
  });
  return n;
}

bool option_bool(const Config& c, const OptionSpec& o) {
  bool b = false;
  visit_field(c, o.field, [&](const auto& v) {
    if constexpr (std::is_same_v<std::decay_t<decltype(v)>, bool>) b = v;
  });
  return b;
}

void copy_option(const OptionSpec& o, const Config& from, Config* to) {
  std::visit(
      [&](auto m) {
        using Owner = typename detail::member_of<decltype(m)>::type;
        if constexpr (std::is_same_v<Owner, Config>) to->*m = from.*m;
        else to->redis.*m = from.redis.*m;
      },
      o.field);
}

void copy_reloadable(const Config& from, Config* to) {
  for (const auto& o : table())
    if (o.reloadable) copy_option(o, from, to);
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
    for (const auto& o : table())
      if (vm.count(o.name)) inv->flags[o.name] = vm[o.name].as<std::string>();
    return true;
  } catch (const std::exception& e) {
    *err = e.what();
    return false;
  }
}

bool load_config(const std::map<std::string, std::string>& flags, Config* out, std::string* err) {
  Config c;  // the rows' defaults
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
        if (!assign_option(&c, *o, opt.value.front(), err)) {
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
    if (!assign_option(&c, *o, value, err)) return false;
  }
  if (!validate(&c, err)) return false;
  *out = c;
  return true;
}

std::string help_text(const char* argv0) {
  std::ostringstream s;
  s << "Usage: " << argv0 << " [--config=FILE] [--name=value ...]\n"
    << "nearcached: the nearcache daemon. Options (also valid in the config file as `name = value`):\n\n";
  for (const auto& o : table()) {
    const std::string range = bounds_text(o);
    s << "  --" << o.name << "=<" << opt_type_name(o.type) << ">";
    s << "  (default: " << default_text(o) << (range.empty() ? "" : "; " + range)
      << (o.reloadable ? "; reloaded on SIGHUP" : "") << ")\n";
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
  for (const auto& o : table()) {
    if (std::string(o.name) == "config") continue;
    s << "\n# " << o.help << (o.reloadable ? " [reloadable]" : "") << "\n";
    s << o.name << " = " << format_option(c, o) << "\n";
  }
  return s.str();
}

std::string config_markdown() {
  auto escape = [](const std::string& text) {
    std::string out;
    for (char ch : text) {
      if (ch == '|') out += "\\|";
      else if (ch == '<') out += "&lt;";
      else if (ch == '>') out += "&gt;";
      else out += ch;
    }
    return out;
  };
  std::ostringstream s;
  s << "# nearcached configuration\n\n"
    << "<!-- Generated by `nearcached --print-config-doc` from the option rows (daemon/config/options.cc, "
       "daemon/redis/config.cc) and the metric tables; do not edit. -->\n\n"
    << "Every option can be given in the config file (`--config=FILE`, INI style: `name = value`, `#` "
       "comments) or as a flag `--name=value`; flags override the file. `nearcached --print-config` prints "
       "the effective configuration as a valid config file. On SIGHUP the daemon re-reads the file and "
       "applies the options marked reloadable; it logs every other change as needing a restart. Default "
       "paths, liveness, signals, exit status and limits: `doc/operations.md`; the Redis tier: "
       "`doc/redis.md`.\n\n"
    << "Sizes take K, M and G suffixes (powers of 1024). Modes are octal.\n\n"
    << "| option | type | default | reloadable | meaning |\n| --- | --- | --- | --- | --- |\n";
  for (const auto& o : table()) {
    const std::string range = bounds_text(o);
    s << "| `" << o.name << "` | " << opt_type_name(o.type) << (range.empty() ? "" : " (" + range + ")") << " | "
      << (o.def[0] ? std::string("`") + o.def + "`" : empty_default(o)) << " | " << (o.reloadable ? "yes" : "no")
      << " | " << escape(o.help) << " |\n";
  }
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
  // In a shared directory such as /tmp another user could have made it first
  // (to serve clients a daemon of theirs). No other place is safe: clients
  // look for the socket at this path and refuse such a directory too.
  const std::string fix =
      ". Remove it (as its owner or root) and start again, or set socket and segment to paths in a "
      "directory this user owns (or XDG_RUNTIME_DIR)";
  if (st.st_uid != getuid() && st.st_uid != 0) {
    *err = "runtime directory " + dir + " belongs to uid " + std::to_string(st.st_uid) + ", not to this user (uid " +
           std::to_string(getuid()) + "): another user may have made it to intercept clients; refusing to use it" + fix;
    return false;
  }
  if (st.st_mode & 0022) {
    *err = "runtime directory " + dir + " is writable by " + ((st.st_mode & 0002) ? "everyone" : "its group") +
           ": others could replace the socket; refusing to use it. Run chmod go-w on it" + fix.substr(fix.find(','));
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
