// daemon/cli/command_line.cc — see command_line.h.
#include "cli/command_line.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "config/options.h"
#include "protocol/protocol.h"

namespace nearcache::daemon {

namespace po = boost::program_options;

namespace {

// The flags every command takes. --config and --socket are the daemon's
// options of those names (config/options.h), read as the daemon reads them.
po::options_description global_flags() {
  po::options_description d("Global options");
  d.add_options()
      ("socket", po::value<std::string>()->value_name("PATH"),
       "the daemon's socket (else $NEARCACHE_SOCKET, else the `socket` of --config, else the default)")
      ("config", po::value<std::string>()->value_name("FILE"), "read the socket path from this nearcached config file")
      ("timeout", po::value<double>()->value_name("SECONDS")->default_value(5, "5"), "connect and reply timeout")
      ("help,h", "print help (of the command, after one) and exit")
      ("version", "print the version and exit");
  return d;
}

// `--redis_url` and `--redis-url` alike: flags are declared with dashes. Only
// the name is rewritten, not a value after `=`, nor anything after `--`.
std::vector<std::string> normalized(int argc, char** argv) {
  std::vector<std::string> out;
  bool flags = true;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--") flags = false;
    else if (flags && a.size() > 2 && a.starts_with("--"))
      std::replace(a.begin(), a.begin() + long(std::min(a.find('='), a.size())), '_', '-');
    out.push_back(std::move(a));
  }
  return out;
}

// The command is the first word that is neither a flag nor a flag's value.
long find_command(const std::vector<std::string>& words, const po::options_description& global) {
  for (size_t i = 0; i < words.size(); ++i) {
    const std::string& w = words[i];
    if (w == "--") return i + 1 < words.size() ? long(i + 1) : -1;
    if (!w.starts_with("-") || w == "-") return long(i);
    if (w.starts_with("--") && w.find('=') == std::string::npos) {
      const po::option_description* o = global.find_nothrow(w.substr(2), false);
      if (o && o->semantic()->max_tokens() > 0) ++i;  // `--socket PATH`: skip PATH
    }
  }
  return -1;
}

std::vector<std::string> long_names(const po::options_description& d) {
  std::vector<std::string> names;
  for (const auto& o : d.options())
    if (!o->long_name().empty()) names.push_back(o->long_name());
  return names;
}

std::vector<std::string> command_names(const std::vector<CliCommand>& table) {
  std::vector<std::string> names;
  for (const auto& c : table) names.push_back(c.name);
  return names;
}

int usage_error(const std::string& what, const char* command) {
  fprintf(stderr, "nearcache: %s\n", what.c_str());
  if (command) fprintf(stderr, "Run 'nearcache %s --help' for its usage.\n", command);
  else fputs("Run 'nearcache --help' for the commands.\n", stderr);
  return kExitUsage;
}

std::string did_you_mean(const std::string& word, const std::vector<std::string>& names, const char* prefix) {
  const std::string n = nearest_name(word, names);
  return n.empty() ? "" : " (did you mean '" + std::string(prefix) + n + "'?)";
}

po::options_description command_flags(const CliCommand& c) {
  po::options_description d(std::string("Options of ") + c.name);
  if (c.flags) c.flags(d);
  return d;
}

std::string command_help(const CliCommand& c) {
  std::ostringstream s;
  s << "Usage: nearcache " << c.name << (c.synopsis[0] ? " " : "") << c.synopsis << " [options]\n\n"
    << c.summary << "\n\n";
  if (c.flags) s << command_flags(c) << "\n";
  s << global_flags();
  return s.str();
}

}  // namespace

std::string nearest_name(const std::string& word, const std::vector<std::string>& names) {
  // Optimal string alignment distance: insertions, deletions, substitutions, adjacent swaps.
  auto distance = [](const std::string& a, const std::string& b) {
    std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
    for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
    for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
    for (size_t i = 1; i <= a.size(); ++i)
      for (size_t j = 1; j <= b.size(); ++j) {
        d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1])});
        if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    return d[a.size()][b.size()];
  };
  std::string best;
  size_t best_d = std::max<size_t>(2, word.size() / 3) + 1;  // a typo, not another word
  for (const auto& n : names) {
    const size_t dn = distance(word, n);
    if (dn < best_d) best_d = dn, best = n;
  }
  return best;
}

std::string cli_help(const std::vector<CliCommand>& table) {
  std::ostringstream s;
  s << "Usage: nearcache [global options] COMMAND [ARGS] [options]\n\n"
       "Inspect and use a running nearcached over its socket.\n\nCommands:\n";
  for (const auto& c : table) {
    std::string head = std::string(c.name) + (c.synopsis[0] ? " " : "") + c.synopsis;
    char line[256];
    if (head.size() < 30) snprintf(line, sizeof line, "  %-30s %s\n", head.c_str(), c.summary);
    else snprintf(line, sizeof line, "  %s\n  %-30s %s\n", head.c_str(), "", c.summary);
    s << line;
  }
  s << "\n";
  for (const auto& c : table)
    if (c.flags) s << command_flags(c) << "\n";
  s << global_flags() << "\n"
    << "Flags may come before or after the command; `--name value` and `--name=value`\n"
       "alike; `_` and `-` in a flag's name alike. `--` ends the flags.\n"
       "`nearcache COMMAND --help` shows the command's own flags.\n\n"
       "Values (get, status --json) print as one line of JSON, text as UTF-8. What JSON\n"
       "lacks is tagged: {\"$bytes\": BASE64}, {\"$tuple\": [...]}, {\"$set\": [...]},\n"
       "{\"$frozenset\": [...]}, {\"$datetime\": ISO}, {\"$date\": ...}, {\"$time\": ...},\n"
       "{\"$timedelta\": TEXT}, {\"$decimal\": TEXT}, {\"$uuid\": TEXT}, {\"$bigint\": DIGITS},\n"
       "{\"$pickle\": BASE64, \"bytes\": N}, {\"$map\": [[key, value], ...]} (keys not text),\n"
       "{\"$float\": \"nan\"}; a value with flags {\"$serialized\": BASE64, \"flags\": F, ...},\n"
       "bytes that are not msgpack {\"$raw\": BASE64, \"bytes\": N}.\n\n"
       "Exit status: 0 done; 1 key not found or error reply; 2 usage; 3 daemon unreachable.\n";
  return s.str();
}

int parse_cli(int argc, char** argv, const std::vector<CliCommand>& table, const CliCommand** cmd,
              CliInvocation* inv) {
  std::vector<std::string> words = normalized(argc, argv);
  const po::options_description global = global_flags();
  const long at = find_command(words, global);
  const CliCommand* c = nullptr;
  if (at >= 0) {
    const std::string& name = words[size_t(at)];
    for (const auto& row : table)
      if (name == row.name) c = &row;
    if (!c) return usage_error("unknown command '" + name + "'" + did_you_mean(name, command_names(table), ""), nullptr);
    words.erase(words.begin() + at);
  }
  po::options_description all;
  all.add(global);
  if (c) all.add(command_flags(*c));
  po::options_description hidden;
  hidden.add_options()("args", po::value<std::vector<std::string>>());
  all.add(hidden);
  po::positional_options_description positional;
  positional.add("args", -1);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(words)
                  .options(all)
                  .positional(positional)
                  .style(po::command_line_style::unix_style & ~po::command_line_style::allow_guessing)
                  .run(),
              vm);
    po::notify(vm);
  } catch (const po::unknown_option& e) {
    std::string flag = e.get_option_name();
    flag = flag.substr(0, flag.find('='));
    const std::string bare = flag.substr(std::min(flag.size(), flag.find_first_not_of('-')));
    std::string hint = did_you_mean(bare, long_names(all), "--");
    if (hint.empty())
      for (const auto& other : table)  // a flag of another command
        if (other.flags && command_flags(other).find_nothrow(bare, false))
          hint = std::string(" (a flag of '") + other.name + "')";
    return usage_error("unknown option " + flag + (c ? std::string(" for ") + c->name : "") + hint,
                       c ? c->name : nullptr);
  } catch (const po::error& e) {
    return usage_error(e.what(), c ? c->name : nullptr);
  }
  if (vm.count("help")) {
    fputs((c ? command_help(*c) : cli_help(table)).c_str(), stdout);
    return kExitOk;
  }
  if (vm.count("version")) {
    printf("nearcache %s\n", kVersion);
    return kExitOk;
  }
  if (!c) {
    fputs(cli_help(table).c_str(), stderr);
    return kExitUsage;
  }
  inv->args = vm.count("args") ? vm["args"].as<std::vector<std::string>>() : std::vector<std::string>{};
  if (inv->args.size() < c->min_args || inv->args.size() > c->max_args)
    return usage_error(std::string(c->name) + " takes " + (c->synopsis[0] ? c->synopsis : "no arguments") +
                           " (got " + std::to_string(inv->args.size()) + " arguments)",
                       c->name);
  const double timeout_s = vm["timeout"].as<double>();
  if (!(timeout_s > 0 && timeout_s < 86400)) return usage_error("--timeout must be between 0 and 86400 seconds", c->name);
  inv->timeout_ms = int(timeout_s * 1000);
  if (vm.count("socket")) inv->socket = vm["socket"].as<std::string>();
  if (inv->socket.empty() && getenv("NEARCACHE_SOCKET") && *getenv("NEARCACHE_SOCKET"))
    inv->socket = getenv("NEARCACHE_SOCKET");
  if (inv->socket.empty() && vm.count("config")) {
    Config cfg;
    std::string err;
    if (!load_config({{"config", vm["config"].as<std::string>()}}, &cfg, &err)) {
      fprintf(stderr, "nearcache: %s\n", err.c_str());
      return kExitUsage;
    }
    inv->socket = cfg.socket;
  }
  if (inv->socket.empty()) inv->socket = default_socket_path();
  inv->flags = std::move(vm);
  *cmd = c;
  return -1;
}

}  // namespace nearcache::daemon
