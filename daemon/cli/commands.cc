// daemon/cli/commands.cc — what each `nearcache` command does: one request
// (or a few) over the socket, its reply printed. A new command is a run
// function and a row in cli_commands().
#include "cli/commands.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>

#include "cli/client.h"
#include "cli/key_text.h"
#include "cli/memory_usage.h"
#include "cli/msgpack_bytes.h"
#include "cli/status_format.h"
#include "cli/top_view.h"
#include "cli/value_json.h"
#include "protocol/key_prefix.h"
#include "protocol/protocol.h"
#include "reader.h"

namespace nearcache::daemon {

namespace po = boost::program_options;

namespace {

// A connection for one command: each error ends the command with its exit status.
class Call {
 public:
  explicit Call(const CliInvocation& inv, bool prometheus = false) : inv_(inv), prometheus_(prometheus) {}

  // Sends one request; nullopt when the reply is OK (then reply() holds it),
  // else the exit status after the error was reported. NOT_FOUND of GET and
  // DELETE is "KEY: not found" (exit 1).
  template <typename F>
  std::optional<int> ask(Op op, F&& args, uint32_t nargs) {
    if (!connected_ && !(connected_ = c_.connect(inv_.socket, inv_.timeout_ms, &err_))) return unreachable();
    if (!c_.call(uint32_t(op), args, nargs, &reply_, &err_)) return unreachable();
    const msgpack::object_array& a = reply_.get().via.array;
    const int code = a.ptr[1].type == msgpack::type::POSITIVE_INTEGER ? int(a.ptr[1].via.u64) : -1;
    if (code == 0) return std::nullopt;
    if (code == int(Code::not_found) && (op == Op::get || op == Op::del || op == Op::ttl) && !inv_.args.empty()) {
      fprintf(stderr, "nearcache: %s: not found\n", inv_.args[0].c_str());
      return kExitFailed;
    }
    std::string msg = code >= 0 ? code_name(Code(code)) : "bad reply";
    if (a.size >= 3 && a.ptr[2].type == msgpack::type::STR) msg = str_of(a.ptr[2]);
    fprintf(stderr, "nearcache: %s\n", msg.c_str());
    return kExitFailed;
  }
  std::optional<int> ask(Op op) {
    return ask(op, [](auto&) {}, 0);
  }
  std::optional<int> ask_key(Op op, const std::string& key) {
    return ask(op, [&](auto& pk) { pack_bytes(pk, key); }, 1);
  }
  // Element i of the OK reply [id, OK, ...]; nil past its end.
  const msgpack::object& at(uint32_t i) const {
    static const msgpack::object nil;
    const msgpack::object_array& a = reply_.get().via.array;
    return i < a.size ? a.ptr[i] : nil;
  }

 private:
  int unreachable() {
    if (prometheus_) fputs(prometheus_down().c_str(), stdout);
    fprintf(stderr, "nearcache: daemon not reachable: %s\n", err_.c_str());
    return kExitUnreachable;
  }

  const CliInvocation& inv_;
  const bool prometheus_;
  BlockingClient c_;
  bool connected_ = false;
  std::string err_;
  msgpack::object_handle reply_;
};

bool flag(const CliInvocation& inv, const char* name) { return inv.flags.count(name) && inv.flags[name].as<bool>(); }

int conflicting(const char* a, const char* b) {
  fprintf(stderr, "nearcache: --%s and --%s exclude each other\n", a, b);
  return kExitUsage;
}

// ------------------------------------------------------------------ status

void status_flags(po::options_description& d) {
  d.add_options()("json", po::bool_switch(), "print STATUS as JSON (every field, values as `get` prints them)")(
      "prometheus", po::bool_switch(), "print the metrics in Prometheus text format (nearcache_up 0 when unreachable)");
}

int run_status(const CliInvocation& inv) {
  const bool json = flag(inv, "json"), prom = flag(inv, "prometheus");
  if (json && prom) return conflicting("json", "prometheus");
  Call call(inv, prom);
  if (auto rc = call.ask(Op::status)) return *rc;
  const msgpack::object& st = call.at(2);
  fputs((prom ? status_prometheus(st) : json ? status_json(st) : status_text(st)).c_str(), stdout);
  return kExitOk;
}

// ------------------------------------------------------------------ ping

int run_ping(const CliInvocation& inv) {
  Call call(inv);
  const auto t0 = std::chrono::steady_clock::now();
  if (auto rc = call.ask(Op::ping)) return *rc;
  const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
  printf("PONG from %s in %.0f us\n", inv.socket.c_str(), us);
  return kExitOk;
}

// ------------------------------------------------------------------ get

void get_flags(po::options_description& d) {
  d.add_options()("raw", po::bool_switch(), "print the stored bytes as they are");
}

int run_get(const CliInvocation& inv) {
  Call call(inv);
  if (auto rc = call.ask_key(Op::get, inv.args[0])) return *rc;
  const std::string_view value = str_of(call.at(2));
  if (flag(inv, "raw")) {
    fwrite(value.data(), 1, value.size(), stdout);
    return kExitOk;
  }
  const msgpack::object& f = call.at(3);  // protocol 2: [id, OK, value, flags, ttl_ms]
  const uint64_t flags = f.type == msgpack::type::POSITIVE_INTEGER ? f.via.u64 : 0;
  printf("%s\n", json_text(stored_value_json(value, flags)).c_str());
  return kExitOk;
}

// ------------------------------------------------------------------ set

void set_flags(po::options_description& d) {
  d.add_options()("ttl", po::value<int64_t>()->value_name("MS"), "expire after MS milliseconds (default: no expiry)")(
      "int", po::bool_switch(), "store VALUE as a msgpack integer")(
      "raw", po::bool_switch(), "store VALUE's bytes as they are (default: a msgpack string)");
}

int run_set(const CliInvocation& inv) {
  const std::string& key = inv.args[0];
  std::string value = inv.args[1];
  const bool raw = flag(inv, "raw"), as_int = flag(inv, "int");
  if (raw && as_int) return conflicting("raw", "int");
  if (!raw) {
    msgpack::sbuffer b;
    msgpack::packer<msgpack::sbuffer> pk(b);
    if (as_int) {
      char* end = nullptr;
      errno = 0;
      const long long n = strtoll(value.c_str(), &end, 10);
      if (errno || !end || *end || value.empty()) {
        fputs("nearcache: --int needs an integer VALUE\n", stderr);
        return kExitUsage;
      }
      pk.pack_int64(n);
    } else {
      pk.pack(value);
    }
    value.assign(b.data(), b.size());
  }
  const bool has_ttl = inv.flags.count("ttl");
  const int64_t ttl = has_ttl ? inv.flags["ttl"].as<int64_t>() : 0;
  Call call(inv);
  auto args = [&](auto& pk) {
    pack_bytes(pk, key);
    pack_bytes(pk, value);
    if (has_ttl) pk.pack_int64(ttl);
    else pk.pack_nil();
  };
  return call.ask(Op::set, args, 3).value_or(kExitOk);
}

// ------------------------------------------------------------------ delete, clear

int run_delete(const CliInvocation& inv) {
  Call call(inv);
  return call.ask_key(Op::del, inv.args[0]).value_or(kExitOk);
}

int run_clear(const CliInvocation& inv) {
  Call call(inv);
  auto args = [&](auto& pk) {
    if (!inv.args.empty()) pack_bytes(pk, inv.args[0]);
  };
  if (auto rc = call.ask(Op::clear, args, uint32_t(inv.args.size()))) return *rc;
  printf("cleared %s entries\n", json_text(value_json(call.at(2))).c_str());
  return kExitOk;
}

// ------------------------------------------------------------------ memory

void memory_flags(po::options_description& d) {
  d.add_options()("by-prefix", po::value<uint32_t>()->implicit_value(1)->value_name("DEPTH"),
                  "entries and bytes by key prefix: the key up to its DEPTH-th separator (default 1)")(
      "separators", po::value<std::string>()->value_name("CHARS")->default_value(std::string(kDefaultKeySeparators)),
      "the characters that end a prefix")(
      "count", po::value<size_t>()->value_name("N")->default_value(20), "prefixes shown (the rest sum to (other))")(
      "segment", po::value<std::string>()->value_name("PATH"),
      "read this segment (default: the one STATUS names; then the daemon is not asked at all)")(
      "posix-shm", po::bool_switch(), "--segment is a POSIX shared-memory name");
}

std::string count_text(uint64_t n) { return std::to_string(n); }

int run_memory(const CliInvocation& inv) {
  std::string segment;
  bool posix = flag(inv, "posix-shm");
  if (inv.flags.count("segment")) {
    segment = inv.flags["segment"].as<std::string>();
  } else {  // the daemon names its segment; the walk itself is ours (memory_usage.h)
    Call call(inv);
    if (auto rc = call.ask(Op::status)) return *rc;
    const msgpack::object* cfg = status_field(call.at(2), "config");
    const msgpack::object* seg = cfg ? status_field(*cfg, "segment") : nullptr;
    const msgpack::object* ps = cfg ? status_field(*cfg, "posix_shm") : nullptr;
    if (!seg) {
      fputs("nearcache: STATUS names no segment\n", stderr);
      return kExitFailed;
    }
    segment = std::string(str_of(*seg));
    posix = ps && ps->type == msgpack::type::BOOLEAN && ps->via.boolean;
  }
  const uint32_t depth = inv.flags.count("by-prefix") ? inv.flags["by-prefix"].as<uint32_t>() : 0;
  if (inv.flags.count("by-prefix") && depth == 0) {
    fputs("nearcache: --by-prefix takes a DEPTH of 1 or more\n", stderr);
    return kExitUsage;
  }
  const std::string seps = inv.flags["separators"].as<std::string>();
  if (depth && seps.empty()) {
    fputs("nearcache: --separators needs at least one character\n", stderr);
    return kExitUsage;
  }
  shm::Reader r;
  std::string why;
  shm::ReaderOptions ro;
  ro.posix_shm = posix;
  if (r.open(segment, &why, ro) != 0) {
    fprintf(stderr, "nearcache: %s\n", why.c_str());
    return kExitFailed;
  }
  const uint64_t now = shm::monotonic_ms();
  const MemoryUsage u = measure_memory(r, depth, seps, now);
  const shm::Reader::Geometry g = r.geometry();
  printf("segment %s%s\n", segment.c_str(), r.alive(now) ? "" : " (its daemon is not running: the table it left)");
  printf("entries: %s (%s negative)\n", count_text(u.entries).c_str(), count_text(u.negative).c_str());
  printf("bytes: %s (%s) in entries, of %s in the data area (%.1f%%): keys %s, values %s, headers and padding %s\n",
         human_bytes(double(u.bytes)).c_str(), count_text(u.bytes).c_str(), human_bytes(double(g.data_bytes)).c_str(),
         g.data_bytes ? 100.0 * double(u.bytes) / double(g.data_bytes) : 0.0, count_text(u.key_bytes).c_str(),
         count_text(u.value_bytes).c_str(), count_text(u.bytes - u.key_bytes - u.value_bytes).c_str());
  if (u.busy_buckets)
    printf("not read: %s buckets kept changing under the walk\n", count_text(u.busy_buckets).c_str());
  if (!depth) return kExitOk;
  const size_t shown = std::min(inv.flags["count"].as<size_t>(), u.prefixes.size());
  PrefixUsage rest = u.other;
  for (size_t i = shown; i < u.prefixes.size(); ++i) rest.entries += u.prefixes[i].entries, rest.bytes += u.prefixes[i].bytes;
  size_t width = 6;
  for (size_t i = 0; i < shown; ++i) width = std::max(width, key_text(u.prefixes[i].prefix, true).size());
  width = std::min<size_t>(width, 60);
  auto row = [&](const std::string& name, uint64_t entries, uint64_t bytes) {
    printf("%-*s %12s %14s %10s %6.1f%%\n", int(width), name.c_str(), count_text(entries).c_str(),
           count_text(bytes).c_str(), human_bytes(double(bytes)).c_str(),
           u.bytes ? 100.0 * double(bytes) / double(u.bytes) : 0.0);
  };
  printf("\nby prefix (depth %u, separators \"%s\"), most bytes first:\n", depth, seps.c_str());
  printf("%-*s %12s %14s %10s %7s\n", int(width), "PREFIX", "ENTRIES", "BYTES", "SIZE", "SHARE");
  for (size_t i = 0; i < shown; ++i) row(key_text(u.prefixes[i].prefix, true), u.prefixes[i].entries, u.prefixes[i].bytes);
  if (rest.entries) row("(other)", rest.entries, rest.bytes);
  return kExitOk;
}

// ------------------------------------------------------------------ hotkeys

void hotkeys_flags(po::options_description& d) {
  d.add_options()("count", po::value<size_t>()->value_name("N")->default_value(10),
                  "keys shown (at most the 32 STATUS reports)");
}

int run_hotkeys(const CliInvocation& inv) {
  Call call(inv);
  if (auto rc = call.ask(Op::status)) return *rc;
  const msgpack::object* ks = status_field(call.at(2), "key_stats");
  const msgpack::object* on = ks ? status_field(*ks, "enabled") : nullptr;
  if (!ks || !on || on->type != msgpack::type::BOOLEAN || !on->via.boolean) {
    fputs("nearcache: key_stats is off (nearcached option key_stats = false)\n", stderr);
    return kExitFailed;
  }
  const msgpack::object* keys = status_field(*ks, "hot_keys");
  const double span = status_number(status_field(*ks, "span_ms"));
  printf("hits by key in the last %.0f s (shared-memory hits sampled, daemon GETs all counted):\n",
         span >= 0 ? span / 1000 : 0.0);
  const uint32_t n = keys && keys->type == msgpack::type::ARRAY ? keys->via.array.size : 0;
  if (n == 0) {
    puts("(no hits)");
    return kExitOk;
  }
  printf("%12s  %s\n", "HITS", "KEY");
  const size_t want = inv.flags["count"].as<size_t>();
  for (uint32_t i = 0; i < n && i < want; ++i) {
    const msgpack::object& k = keys->via.array.ptr[i];
    if (k.type != msgpack::type::ARRAY || k.via.array.size != 2) continue;
    printf("%12.0f  %s\n", status_number(&k.via.array.ptr[1]), key_text(str_of(k.via.array.ptr[0])).c_str());
  }
  return kExitOk;
}

// ------------------------------------------------------------------ top

void top_flags(po::options_description& d) {
  d.add_options()("interval", po::value<double>()->value_name("SECONDS")->default_value(1, "1"),
                  "time between refreshes (0.1 to 3600)")(
      "count", po::value<long>()->value_name("N")->default_value(0), "refreshes before exiting (0: until q or Ctrl-C)");
}

int run_top_command(const CliInvocation& inv) {
  TopOptions o;
  o.socket = inv.socket;
  o.timeout_ms = inv.timeout_ms;
  o.interval_s = inv.flags["interval"].as<double>();
  o.count = inv.flags["count"].as<long>();
  if (!(o.interval_s >= 0.1 && o.interval_s <= 3600)) {
    fputs("nearcache: --interval must be between 0.1 and 3600 seconds\n", stderr);
    return kExitUsage;
  }
  if (o.count < 0) {
    fputs("nearcache: --count must be 0 or more\n", stderr);
    return kExitUsage;
  }
  return run_top(o);
}

// ------------------------------------------------------------------ keys, ttl

void keys_flags(po::options_description& d) {
  d.add_options()("count", po::value<uint64_t>()->default_value(1000)->value_name("N"),
                  "keys per SCAN round trip (1-10000)");
}

// A key on one line: bytes below 0x20, 0x7f and `\` as \xHH, the rest as they are.
std::string printable_key(std::string_view k) {
  std::string out;
  for (unsigned char c : k) {
    if (c < 0x20 || c == 0x7f || c == '\\') {
      char buf[5];
      snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += char(c);
    }
  }
  return out;
}

int run_keys(const CliInvocation& inv) {
  const std::string& pattern = inv.args[0];
  const uint64_t count = inv.flags["count"].as<uint64_t>();
  if (count < 1 || count > 10000) {
    fputs("nearcache: --count must be 1 to 10000\n", stderr);
    return kExitUsage;
  }
  Call call(inv);
  uint64_t cursor = 0;
  do {
    auto args = [&](auto& pk) {
      pk.pack_uint64(cursor);
      pack_bytes(pk, pattern);
      pk.pack_uint64(count);
    };
    if (auto rc = call.ask(Op::scan, args, 3)) return *rc;
    cursor = call.at(2).via.u64;
    const msgpack::object& keys = call.at(3);
    for (uint32_t i = 0; i < keys.via.array.size; ++i) printf("%s\n", printable_key(str_of(keys.via.array.ptr[i])).c_str());
  } while (cursor != 0);
  return kExitOk;
}

int run_ttl(const CliInvocation& inv) {
  Call call(inv);
  if (auto rc = call.ask_key(Op::ttl, inv.args[0])) return *rc;
  const msgpack::object& ms = call.at(2);
  if (ms.type == msgpack::type::NIL) printf("no expiry\n");
  else printf("%llu ms\n", static_cast<unsigned long long>(ms.via.u64));
  return kExitOk;
}

int run_help(const CliInvocation& inv);

}  // namespace

const std::vector<CliCommand>& cli_commands() {
  static const std::vector<CliCommand> table = {
      {"status", "", "the daemon's state and counters (text, --json, --prometheus)", 0, 0, status_flags, run_status},
      {"ping", "", "round trip to the daemon", 0, 0, nullptr, run_ping},
      {"get", "KEY", "print a value as JSON, decoded as the Python client wrote it", 1, 1,
       get_flags, run_get},
      {"set", "KEY VALUE", "store VALUE (a msgpack string; --int, --raw, --ttl=MS)", 2, 2,
       set_flags, run_set},
      {"delete", "KEY", "remove a key", 1, 1, nullptr, run_delete},
      {"clear", "[PREFIX]", "remove every key (that starts with PREFIX)", 0, 1, nullptr, run_clear},
      {"memory", "", "entries and bytes in the table, --by-prefix[=DEPTH] (read from the segment)", 0, 0,
       memory_flags, run_memory},
      {"hotkeys", "", "the most hit keys of the last 10-20 s (sampled shared-memory hits, daemon GETs)", 0, 0,
       hotkeys_flags, run_hotkeys},
      {"top", "", "live view, refreshed every second: rates, hit ratio, memory, Redis (q quits)", 0, 0, top_flags,
       run_top_command},
      {"keys", "PATTERN", "list this host's keys matching a glob PATTERN (Redis's rules), one a line", 1, 1,
       keys_flags, run_keys},
      {"ttl", "KEY", "the time KEY has left (Redis's with a Redis tier): \"N ms\" or \"no expiry\"", 1, 1,
       nullptr, run_ttl},
      {"help", "[COMMAND]", "print the help of nearcache or of COMMAND", 0, 1, nullptr, run_help},
  };
  return table;
}

namespace {
int run_help(const CliInvocation& inv) {
  std::string a0 = "nearcache";
  std::vector<std::string> words = {a0};
  if (!inv.args.empty()) words.push_back(inv.args[0]);
  words.push_back("--help");
  std::vector<char*> argv;
  for (auto& w : words) argv.push_back(w.data());
  const CliCommand* c = nullptr;
  CliInvocation unused;
  const int rc = parse_cli(int(argv.size()), argv.data(), cli_commands(), &c, &unused);
  return rc < 0 ? kExitOk : rc;
}
}  // namespace

}  // namespace nearcache::daemon
