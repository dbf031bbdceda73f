// daemon/cli/command_line.h — the `nearcache` command line: a table of
// commands, each with its positional arguments and its own flags, parsed with
// Boost.Program_options. Global flags go before or after the command;
// `--name value` and `--name=value`; `_` and `-` in a flag's name are the
// same (`--redis_url` is `--redis-url`); `--` ends the flags (a key that
// starts with `-`). Usage errors name the nearest known command or flag and
// exit 2.
#pragma once

#include <boost/program_options.hpp>
#include <string>
#include <vector>

namespace nearcache::daemon {

// What a command runs with: the global flags resolved, its own flags, its arguments.
struct CliInvocation {
  std::string socket;   // resolved: --socket, $NEARCACHE_SOCKET, --config's socket, the default
  int timeout_ms = 5000;
  boost::program_options::variables_map flags;  // the command's flags (and the global ones)
  std::vector<std::string> args;                // positional arguments after the command
};

// One row per command: adding a command is one row (and its run function).
struct CliCommand {
  const char* name;
  const char* synopsis;  // its positional arguments, for usage lines: "KEY VALUE", "[PREFIX]", ""
  const char* summary;   // one line for `nearcache --help`
  size_t min_args, max_args;
  void (*flags)(boost::program_options::options_description&);  // nullptr: none
  int (*run)(const CliInvocation&);
};

// Exit statuses (also in --help).
inline constexpr int kExitOk = 0, kExitFailed = 1, kExitUsage = 2, kExitUnreachable = 3;

// Parses argv. Returns -1 with *cmd and *inv set (run the command), else the
// exit status: 0 after --help or --version, 2 after a usage error (reported
// on stderr).
int parse_cli(int argc, char** argv, const std::vector<CliCommand>& table, const CliCommand** cmd,
              CliInvocation* inv);

// The overall --help text (also the man page's, through help2man).
std::string cli_help(const std::vector<CliCommand>& table);

// The nearest of `names` to `word` by edit distance (a swap counts one), or
// "" when none is close enough to be a likely typo.
std::string nearest_name(const std::string& word, const std::vector<std::string>& names);

}  // namespace nearcache::daemon
