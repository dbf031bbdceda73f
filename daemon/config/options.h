// daemon/config/options.h — nearcached's one option table.
//
// One row per option (config/option_row.h: name, type, default, bounds,
// reloadable?, help, field); the Redis tier's rows come from
// redis/config.cc. The rows drive the defaults, the config file (INI
// `name = value`, `#` comments), the `--name=value` flags, validation,
// `--help`, `--print-config`, SIGHUP, STATUS's `config` map and
// doc/configuration.md. Command line values override the file; SIGHUP
// re-reads the file and applies the reloadable rows only. The rules that tie
// fields together are the validators in options.cc, next to the table.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "config/option_row.h"
#include "redis/config.h"

namespace nearcache::daemon {

// Each option's default is in its row (options.cc).
struct Config {
  Config();  // the rows' defaults
  std::string config;  // file path; empty = none
  std::string socket, socket_group;
  unsigned socket_mode;
  std::string segment, segment_group;
  bool posix_shm;
  bool warm_restart;
  unsigned segment_mode, hints_mode;  // hints_mode: deprecated, ignored (layout 1)
  uint64_t segment_size;
  uint64_t key_limit, value_limit, expected_item_size;
  bool authoritative;  // without a tier: the segment header says a miss is definite
  uint64_t max_ttl_ms;
  uint64_t max_frame_bytes;  // 0 = auto: 4 MiB + key_limit + value_limit (resolved by load_config)
  uint64_t max_outstanding, max_output_bytes, max_connections;
  uint64_t max_output_bytes_total, slow_reader_timeout_ms;
  std::string allow_users, allow_groups;
  uint64_t heartbeat_interval_ms, heartbeat_grace_ms;
  uint64_t max_lease_ms, max_wait_ms, max_lock_ms;
  std::string log_level;
  bool key_stats;
  uint64_t key_stats_prefix_depth;
  std::string key_stats_separators;
  redis::Config redis;  // the Redis tier's options (redis_*), handed to the tier as they are
};

// The table, in the order of --help, --print-config and the docs.
const std::vector<OptionSpec>& option_table();
const OptionSpec* find_option(const std::string& name);

// The option's current value, formatted as a config file takes it.
// A count or size option's value, a boolean option's value (STATUS).
uint64_t option_number(const Config& c, const OptionSpec& o);
bool option_bool(const Config& c, const OptionSpec& o);
// Copies the value of `o` from one Config to another.
void copy_option(const OptionSpec& o, const Config& from, Config* to);
// Copies every reloadable option (what SIGHUP may change at run time).
void copy_reloadable(const Config& from, Config* to);

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
