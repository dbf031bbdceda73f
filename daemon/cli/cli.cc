// daemon/cli/cli.cc — `nearcache`, the operator's command line: status (text,
// --json, --prometheus), ping, get, set, delete, clear, over the socket.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "cli/client.h"
#include "cli/msgpack_bytes.h"
#include "config/options.h"
#include "protocol/protocol.h"
#include "cli/status_format.h"

using namespace nearcache::daemon;

namespace {

const char* kUsage =
    "Usage: nearcache [--socket=PATH] [--config=FILE] [--timeout=SECONDS] COMMAND [ARGS]\n"
    "\n"
    "Commands:\n"
    "  status [--json | --prometheus]   the daemon's state and counters\n"
    "  ping                             round trip to the daemon\n"
    "  get KEY [--raw]                  print a value (decoded from msgpack unless --raw)\n"
    "  set KEY VALUE [--ttl=MS] [--raw | --int]\n"
    "                                   store VALUE as a msgpack string (--int: integer,\n"
    "                                   --raw: the bytes as given); no --ttl = no expiry\n"
    "  delete KEY                       remove a key\n"
    "  clear [PREFIX]                   remove every key (that starts with PREFIX)\n"
    "\n"
    "The socket is --socket, else $NEARCACHE_SOCKET, else the `socket` of --config,\n"
    "else the default (<runtime dir>/nearcached.sock, as nearcached resolves it).\n"
    "Exit status: 0 done; 1 key not found or error reply; 2 usage; 3 daemon unreachable.\n";

int usage(const char* why) {
  if (why) fprintf(stderr, "nearcache: %s\n", why);
  fputs(kUsage, stderr);
  return 2;
}

int reply_code(const msgpack::object& r) {
  const auto& a = r.via.array;
  return a.ptr[1].type == msgpack::type::POSITIVE_INTEGER ? int(a.ptr[1].via.u64) : -1;
}

// Prints an error reply ([id, code, message]) and returns 1.
int report_error(const msgpack::object& r) {
  const auto& a = r.via.array;
  const int code = reply_code(r);
  std::string msg = code >= 0 ? code_name(Code(code)) : "bad reply";
  if (a.size >= 3 && a.ptr[2].type == msgpack::type::STR) msg = str_of(a.ptr[2]);
  fprintf(stderr, "nearcache: %s\n", msg.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::string socket_path, config_path, cmd;
  double timeout_s = 5;
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      fputs(kUsage, stdout);
      return 0;
    }
    if (cmd.empty() && a.starts_with("--socket=")) socket_path = a.substr(9);
    else if (cmd.empty() && a.starts_with("--config=")) config_path = a.substr(9);
    else if (cmd.empty() && a.starts_with("--timeout=")) timeout_s = atof(a.c_str() + 10);
    else if (cmd.empty() && a.starts_with("--")) return usage(("unknown option " + a).c_str());
    else if (cmd.empty()) cmd = a;
    else args.push_back(a);
  }
  if (cmd.empty()) return usage(nullptr);

  // Command flags and positional arguments.
  bool json = false, prom = false, raw = false, as_int = false, has_ttl = false;
  int64_t ttl = 0;
  std::vector<std::string> pos;
  for (const auto& a : args) {
    if (a == "--json") json = true;
    else if (a == "--prometheus") prom = true;
    else if (a == "--raw") raw = true;
    else if (a == "--int") as_int = true;
    else if (a.starts_with("--ttl=")) has_ttl = true, ttl = strtoll(a.c_str() + 6, nullptr, 10);
    else if (a.starts_with("--") && a.size() > 2) return usage(("unknown option " + a).c_str());
    else pos.push_back(a);
  }

  if (socket_path.empty() && getenv("NEARCACHE_SOCKET") && *getenv("NEARCACHE_SOCKET"))
    socket_path = getenv("NEARCACHE_SOCKET");
  if (socket_path.empty() && !config_path.empty()) {
    Config cfg;
    std::string err;
    if (!load_config({{"config", config_path}}, &cfg, &err)) {
      fprintf(stderr, "nearcache: %s\n", err.c_str());
      return 2;
    }
    socket_path = cfg.socket;
  }
  if (socket_path.empty()) socket_path = default_socket_path();

  auto need = [&](size_t n, const char* what) {
    if (pos.size() != n) {
      usage((cmd + " takes " + what).c_str());
      return false;
    }
    return true;
  };
  if (cmd == "status" || cmd == "ping") {
    if (!need(0, "no arguments")) return 2;
  } else if (cmd == "get" || cmd == "delete") {
    if (!need(1, "KEY")) return 2;
  } else if (cmd == "set") {
    if (!need(2, "KEY VALUE")) return 2;
  } else if (cmd == "clear") {
    if (pos.size() > 1) return usage("clear takes at most PREFIX");
  } else {
    return usage(("unknown command " + cmd).c_str());
  }

  BlockingClient c;
  std::string err;
  msgpack::object_handle reply;
  auto unreachable = [&]() {
    if (prom) fputs(prometheus_down().c_str(), stdout);
    fprintf(stderr, "nearcache: daemon not reachable: %s\n", err.c_str());
    return 3;
  };
  if (!c.connect(socket_path, int(timeout_s * 1000), &err)) return unreachable();
  const std::string key = pos.empty() ? "" : pos[0];
  // Sends one request. An unreachable daemon or an error reply (NOT_FOUND for
  // GET and DELETE) ends the command: the exit status is returned.
  auto ask = [&](Op op, auto&& args, uint32_t nargs) -> std::optional<int> {
    if (!c.call(uint32_t(op), args, nargs, &reply, &err)) return unreachable();
    const int code = reply_code(reply.get());
    if (code == int(Code::not_found) && (op == Op::get || op == Op::del)) {
      fprintf(stderr, "nearcache: %s: not found\n", key.c_str());
      return 1;
    }
    if (code != 0) return report_error(reply.get());
    return std::nullopt;
  };
  auto no_args = [](auto&) {};
  auto the_key = [&](auto& pk) { pack_bytes(pk, key); };

  if (cmd == "status") {
    if (auto rc = ask(Op::status, no_args, 0)) return *rc;
    const msgpack::object& st = reply.get().via.array.ptr[2];
    fputs((prom ? status_prometheus(st) : json ? status_json(st) : status_text(st)).c_str(), stdout);
    return 0;
  }
  if (cmd == "ping") {
    const auto t0 = std::chrono::steady_clock::now();
    if (auto rc = ask(Op::ping, no_args, 0)) return *rc;
    const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
    printf("PONG from %s in %.0f us\n", socket_path.c_str(), us);
    return 0;
  }
  if (cmd == "get") {
    if (auto rc = ask(Op::get, the_key, 1)) return *rc;
    const msgpack::object& v = reply.get().via.array.ptr[2];
    const std::string_view value = str_of(v);
    if (raw) {
      fwrite(value.data(), 1, value.size(), stdout);
      return 0;
    }
    // A value is normally one msgpack object; show it as JSON, else as a byte string.
    try {
      size_t off = 0;
      msgpack::object_handle h = msgpack::unpack(value.data(), value.size(), off);
      if (off == value.size()) {
        printf("%s\n", to_json(h.get()).c_str());
        return 0;
      }
    } catch (const std::exception&) {
    }
    printf("%s\n", to_json(v).c_str());
    return 0;
  }
  if (cmd == "set") {
    std::string value = pos[1];
    if (!raw) {
      msgpack::sbuffer b;
      msgpack::packer<msgpack::sbuffer> pk(b);
      if (as_int) {
        char* end = nullptr;
        errno = 0;
        const long long n = strtoll(value.c_str(), &end, 10);
        if (errno || !end || *end || value.empty()) return usage("--int needs an integer VALUE");
        pk.pack_int64(n);
      } else {
        pk.pack(value);
      }
      value.assign(b.data(), b.size());
    }
    auto packit = [&](auto& pk) {
      pack_bytes(pk, key);
      pack_bytes(pk, value);
      if (has_ttl) pk.pack_int64(ttl);
      else pk.pack_nil();
    };
    return ask(Op::set, packit, 3).value_or(0);
  }
  if (cmd == "delete") return ask(Op::del, the_key, 1).value_or(0);
  // clear
  auto packit = [&](auto& pk) {
    if (!pos.empty()) pack_bytes(pk, pos[0]);
  };
  if (auto rc = ask(Op::clear, packit, uint32_t(pos.size()))) return *rc;
  printf("cleared %s entries\n", to_json(reply.get().via.array.ptr[2]).c_str());
  return 0;
}
