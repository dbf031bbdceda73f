// daemon/config/options.h — nearcached's one option table.
//
// The table (name, type, default, reloadable?, help) drives the config file
// (INI `name = value`, `#` comments), the `--name=value` flags, `--help`,
// `--print-config`, STATUS's `config` map and doc/configuration.md. Command
// line values override the file; SIGHUP re-reads the file and applies the
// reloadable options only.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <variant>
#include <vector>

namespace nearcache::redis {
struct Config;
}

namespace nearcache::daemon {

struct Config {
  std::string config;  // file path; empty = none
  std::string socket, socket_group;
  unsigned socket_mode = 0660;
  std::string segment, segment_group;
  bool posix_shm = false;
  unsigned segment_mode = 0640, hints_mode = 0660;
  uint64_t segment_size = 64ull << 20;
  uint64_t key_limit = 1024, value_limit = 1ull << 20, expected_item_size = 256;
  uint64_t max_ttl_ms = 0;
  uint64_t max_frame_bytes = 0;  // 0 = auto: 4 MiB + key_limit + value_limit (resolved by load_config)
  uint64_t max_outstanding = 4096, max_output_bytes = 64ull << 20, max_connections = 4096;
  std::string allow_users, allow_groups;
  uint64_t heartbeat_interval_ms = 100, heartbeat_grace_ms = 2000;
  uint64_t max_lease_ms = 300000, max_wait_ms = 300000;
  std::string log_level = "info";
  // The Redis tier (daemon/redis/config.h has their meaning and defaults).
  std::string redis_url, redis_prefix = "nearcache:", redis_password_file, redis_down = "local";
  uint64_t redis_connect_timeout_ms = 1000, redis_command_timeout_ms = 1000;
  uint64_t redis_queue_max_entries = 100000, redis_queue_max_bytes = 64ull << 20;
  uint64_t redis_local_ttl_max_ms = 300000;
  uint64_t redis_reconnect_min_ms = 100, redis_reconnect_max_ms = 10000, redis_reconnect_jitter_percent = 50;
  uint64_t redis_drain_timeout_ms = 5000, redis_heartbeat_ms = 1000;
  uint64_t redis_lease_poll_min_ms = 10, redis_lease_poll_max_ms = 250;
  uint64_t redis_wait_ms = 500;
  std::string redis_tls_ca_file, redis_tls_cert_file, redis_tls_key_file, redis_tls_server_name;
  bool redis_tls_verify = true;
};

enum class OptType { string, path, boolean, size, count, mode, list, secret };

struct OptionSpec {
  const char* name;
  OptType type;
  const char* def;  // as written in a config file; "" = empty / automatic
  bool reloadable;
  const char* help;
  std::variant<std::string Config::*, bool Config::*, unsigned Config::*, uint64_t Config::*> field;
};

const std::vector<OptionSpec>& option_table();
const OptionSpec* find_option(const std::string& name);
const char* opt_type_name(OptType t);

// Parses "64M", "1G", "4096", "512K" (binary units); false on junk or overflow.
bool parse_size(const std::string& s, uint64_t* out);
// The option's current value, formatted as a config file takes it.
std::string format_option(const Config& c, const OptionSpec& o);

// What the command line asked for besides options.
struct Invocation {
  bool help = false, print_config = false, print_config_doc = false, print_socket_banner = false, version = false;
  std::map<std::string, std::string> flags;  // --name=value from the command line
};

// Parses argv (options of the table plus --help, --print-config,
// --print-config-doc, --print-socket-banner, --version). Returns false with *err set.
bool parse_command_line(int argc, char** argv, Invocation* inv, std::string* err);

// Builds the configuration: defaults, then the config file (flags' `config`
// wins), then the flags; resolves default paths and automatic values, then
// validates. Returns false with *err naming the problem.
bool load_config(const std::map<std::string, std::string>& flags, Config* out, std::string* err);

// The Redis tier's settings (without the password, which main reads from
// redis_password_file). load_config has validated them.
redis::Config redis_config(const Config& c);

// `--help` text and `--print-config` text (a valid config file).
std::string help_text(const char* argv0);
std::string config_text(const Config& c);
// doc/configuration.md, generated from the table.
std::string config_markdown();

// Default runtime directory: $RUNTIME_DIRECTORY (systemd's RuntimeDirectory=;
// the first one when it lists several), else $XDG_RUNTIME_DIR/nearcache,
// /run/nearcache for root, else /tmp/nearcache-<uid>. $RUNTIME_DIRECTORY
// counts for the daemon only; default_socket_path() is the clients' (the CLI).
std::string default_runtime_dir(bool daemon);
std::string default_socket_path();
// Creates the default runtime directory (mode 0750) if missing and checks that
// an existing one is a real directory owned by this user (or root).
bool ensure_runtime_dir(const std::string& dir, std::string* err);

// "alice,1001" -> uids; unknown names are an error.
bool resolve_users(const std::string& list, std::vector<uint32_t>* out, std::string* err);
bool resolve_groups(const std::string& list, std::vector<uint32_t>* out, std::string* err);
// A group name or number; "" = -1 (keep the creator's group).
bool resolve_group(const std::string& name, int64_t* gid, std::string* err);

}  // namespace nearcache::daemon
