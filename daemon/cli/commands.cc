// daemon/cli/commands.cc — what each `nearcache` command does: one request
// (or a few) over the socket, its reply printed. A new command is a run
// function and a row in cli_commands().
#include "cli/commands.h"

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>

#include "cli/client.h"
#include "cli/msgpack_bytes.h"
#include "cli/status_format.h"
#include "cli/value_json.h"
#include "protocol/protocol.h"

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
    if (code == int(Code::not_found) && (op == Op::get || op == Op::del) && !inv_.args.empty()) {
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
