// tests/redis/harness.h — real redis-server processes and a libuv loop for
// the Redis tier's tests.
//
// RedisServer starts `redis-server` (from PATH; scripts/install-deps.sh test
// installs it) in a fresh temporary directory on a Unix socket and, when
// asked, a TCP port on 127.0.0.1, with a password or an ACL user, and with
// an append-only file so that a SIGKILLed server comes back with every write
// it acknowledged. It can be stopped, killed, paused (SIGSTOP) and restarted
// on the same socket and port. Its `sync()` client is a plain blocking
// hiredis connection for checking what Redis holds.
#pragma once

#include <arpa/inet.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <cstdarg>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace nctest {

// hiredis writes with write(2): a server that died makes that raise SIGPIPE.
// nearcached ignores SIGPIPE (daemon/server/main.cc); so do these tests.
inline const bool kSigpipeIgnored = [] {
  signal(SIGPIPE, SIG_IGN);
  return true;
}();

inline uint64_t now_ms() {
  return uint64_t(std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now().time_since_epoch())
                      .count());
}

// A free TCP port on 127.0.0.1 (bound and released; the server may still
// lose a race for it, and start() then tries another).
inline int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

class Reply {
 public:
  explicit Reply(redisReply* r = nullptr) : r_(r) {}
  ~Reply() {
    if (r_) freeReplyObject(r_);
  }
  Reply(Reply&& o) noexcept : r_(o.r_) { o.r_ = nullptr; }
  Reply& operator=(Reply&& o) noexcept {
    std::swap(r_, o.r_);
    return *this;
  }
  redisReply* operator->() const { return r_; }
  redisReply* get() const { return r_; }
  bool nil() const { return r_ && r_->type == REDIS_REPLY_NIL; }
  std::string str() const { return r_ && r_->type == REDIS_REPLY_STRING ? std::string(r_->str, r_->len) : std::string(); }
  long long integer() const { return r_ && r_->type == REDIS_REPLY_INTEGER ? r_->integer : -999; }

 private:
  redisReply* r_;
};

class RedisServer {
 public:
  struct Options {
    bool tcp = false;
    std::string password;  // requirepass (the default user)
    std::string user, user_password;  // an ACL user with every permission
    bool aof = true;
    std::vector<std::string> extra_args;  // more redis-server flags (e.g. --tls-port ...)
  };

  RedisServer() : RedisServer(Options{}) {}
  explicit RedisServer(Options o) : o_(std::move(o)) {
    std::string tmpl = (std::filesystem::temp_directory_path() / "nc-redis-XXXXXX").string();
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    dir = tmpl;
    socket = dir + "/redis.sock";
    start();
  }
  ~RedisServer() {
    kill();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  std::string dir, socket;
  int port = 0;

  std::string unix_url(const std::string& creds = "") const {
    return "unix://" + (creds.empty() ? "" : creds + "@") + socket;
  }
  std::string tcp_url(const std::string& host = "127.0.0.1", const std::string& creds = "") const {
    return "redis://" + (creds.empty() ? "" : creds + "@") + host + ":" + std::to_string(port);
  }

  void start() {
    for (int tries = 0; tries < 5; ++tries) {
      if (o_.tcp && (port == 0 || tries > 0)) port = free_port();
      if (launch()) return;
    }
    FAIL("redis-server did not start; its log:\n" << log());
  }
  void stop() { signal_wait(SIGTERM); }
  void kill() { signal_wait(SIGKILL); }
  void pause() {
    if (pid_ > 0) ::kill(pid_, SIGSTOP);
  }
  void resume() {
    if (pid_ > 0) ::kill(pid_, SIGCONT);
  }
  bool running() const { return pid_ > 0; }

  // A blocking client (reconnected after restarts).
  Reply cmd(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    redisReply* r = static_cast<redisReply*>(redisvCommand(client(), fmt, ap));
    va_end(ap);
    if (!r) {
      redisFree(sync_);
      sync_ = nullptr;
    }
    return Reply(r);
  }
  Reply cmdv(const std::vector<std::string>& argv) {
    std::vector<const char*> a;
    std::vector<size_t> l;
    for (auto& s : argv) a.push_back(s.data()), l.push_back(s.size());
    return Reply(static_cast<redisReply*>(redisCommandArgv(client(), int(a.size()), a.data(), l.data())));
  }
  // DBSIZE without the tier's bookkeeping keys (slot and clear counters,
  // flush marker: daemon/redis/slots.h), which start with "\0nc" but are no lease.
  long long dbsize_values() {
    long long n = cmd("DBSIZE").integer();
    for (const char* mark : {"ncslot", "ncclear", "ncepoch"}) {
      Reply r = cmdv({"KEYS", std::string(1, '\0') + mark + "*"});
      n -= r.get() && r->type == REDIS_REPLY_ARRAY ? (long long)r->elements : 0;
    }
    return n;
  }
  // "calls" of one command in INFO commandstats (0 if never run).
  long long calls(const std::string& command) {
    const std::string info = cmd("INFO commandstats").str();
    const std::string tag = "cmdstat_" + command + ":calls=";
    const size_t p = info.find(tag);
    return p == std::string::npos ? 0 : std::stoll(info.substr(p + tag.size()));
  }
  std::string log() const {
    FILE* f = fopen((dir + "/redis.log").c_str(), "r");
    if (!f) return "(no log)";
    std::string s;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
    fclose(f);
    return s.size() > 4000 ? s.substr(s.size() - 4000) : s;
  }

 private:
  redisContext* client() {
    if (sync_) return sync_;
    sync_ = redisConnectUnix(socket.c_str());
    REQUIRE(sync_);
    REQUIRE(sync_->err == 0);
    if (!o_.password.empty()) freeReplyObject(redisCommand(sync_, "AUTH %s", o_.password.c_str()));
    return sync_;
  }

  bool launch() {
    std::vector<std::string> args = {"redis-server", "--port", std::to_string(o_.tcp ? port : 0),
                                     "--bind", "127.0.0.1", "--unixsocket", socket, "--unixsocketperm", "700",
                                     "--dir", dir, "--logfile", dir + "/redis.log", "--save", "",
                                     "--appendonly", o_.aof ? "yes" : "no", "--appendfsync", "no",
                                     "--daemonize", "no", "--protected-mode", "no", "--databases", "4"};
    if (!o_.password.empty()) args.insert(args.end(), {"--requirepass", o_.password});
    if (!o_.user.empty()) args.insert(args.end(), {"--user", o_.user, "on", ">" + o_.user_password, "~*", "&*", "+@all"});
    args.insert(args.end(), o_.extra_args.begin(), o_.extra_args.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_ = fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);  // no server outlives a crashed test
      execvp("redis-server", argv.data());
      fprintf(stderr, "cannot run redis-server: %s (install it: scripts/install-deps.sh test)\n", strerror(errno));
      _exit(127);
    }
    if (sync_) redisFree(sync_), sync_ = nullptr;
    const uint64_t deadline = now_ms() + 10000;
    while (now_ms() < deadline) {
      int st;
      if (waitpid(pid_, &st, WNOHANG) == pid_) {
        pid_ = -1;
        return false;
      }
      redisContext* c = redisConnectUnix(socket.c_str());
      if (c && c->err == 0) {
        if (!o_.password.empty()) freeReplyObject(redisCommand(c, "AUTH %s", o_.password.c_str()));
        auto* r = static_cast<redisReply*>(redisCommand(c, "PING"));
        const bool ok = r && r->type == REDIS_REPLY_STATUS;  // not -LOADING
        if (r) freeReplyObject(r);
        redisFree(c);
        if (ok) return true;
      } else if (c) {
        redisFree(c);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    FAIL("redis-server did not answer within 10 s; its log:\n" << log());
    return false;
  }

  void signal_wait(int sig) {
    if (pid_ <= 0) return;
    if (sig != SIGKILL) ::kill(pid_, SIGCONT);
    ::kill(pid_, sig);
    int st;
    waitpid(pid_, &st, 0);
    pid_ = -1;
    if (sync_) redisFree(sync_), sync_ = nullptr;
  }

  Options o_;
  pid_t pid_ = -1;
  redisContext* sync_ = nullptr;
};

// A libuv loop for one test; closes and checks that nothing was left open.
class Loop {
 public:
  Loop() {
    uv_loop_init(&loop_);
    uv_timer_init(&loop_, &tick_);
    uv_unref(reinterpret_cast<uv_handle_t*>(&tick_));
  }
  ~Loop() {
    uv_close(reinterpret_cast<uv_handle_t*>(&tick_), nullptr);
    // Let closing handles finish; then nothing may remain.
    for (int i = 0; i < 100 && uv_loop_alive(&loop_); ++i) uv_run(&loop_, UV_RUN_NOWAIT);
    uv_run(&loop_, UV_RUN_NOWAIT);
    const int rc = uv_loop_close(&loop_);
    if (rc != 0) {
      uv_walk(
          &loop_, [](uv_handle_t* h, void*) { fprintf(stderr, "handle left open: %s\n", uv_handle_type_name(h->type)); },
          nullptr);
    }
    CHECK(rc == 0);
  }
  uv_loop_t* get() { return &loop_; }
  operator uv_loop_t*() { return &loop_; }

  // Runs the loop until pred() holds or `ms` pass; returns pred().
  bool until(const std::function<bool()>& pred, uint64_t ms = 5000) {
    const uint64_t deadline = now_ms() + ms;
    uv_timer_start(&tick_, [](uv_timer_t*) {}, 2, 2);  // UV_RUN_ONCE returns at least every 2 ms
    while (!pred() && now_ms() < deadline) uv_run(&loop_, UV_RUN_ONCE);
    uv_timer_stop(&tick_);
    return pred();
  }
  // Runs the loop for `ms`.
  void run_for(uint64_t ms) {
    until([] { return false; }, ms);
  }

 private:
  uv_loop_t loop_;
  uv_timer_t tick_;
};

}  // namespace nctest
