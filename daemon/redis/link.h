// daemon/redis/link.h — one Redis connection on the daemon's libuv loop,
// kept up for as long as the Link runs.
//
// The connection is the Link's own transport (transport.h: TCP or a Unix
// socket, plain or TLS with OpenSSL over memory BIOs, all on the loop);
// hiredis 0.14 only formats commands (redisFormatCommandArgv) and parses
// replies (redisReader). Replies are matched to commands in send order;
// pub/sub messages go to the subscribe() callback.
//
// Names are resolved with uv_getaddrinfo (on libuv's threadpool, at most one
// lookup in flight per Link, so a resolver that hangs holds one pool thread
// and never the loop) and the transport connects to the numeric address; a
// timer bounds resolve + connect + TLS handshake + AUTH + SELECT + the
// owner's setup steps (connect_timeout_ms), and every command
// (command_timeout_ms). A command that times out closes the connection: its
// effect is unknown and everything pipelined behind it would wait as long.
// After any failure the Link reconnects with exponential backoff and jitter.
//
// Commands: command() sends one command if the link is ready (or in its
// setup steps) and returns true; its callback then runs exactly once, with
// the reply or with a failure (timeout, disconnected). It returns false,
// and never calls the callback, when the link is not ready. Commands of one
// Link reach Redis in the order sent.
//
// Listeners (on_up / on_down) hear when the link becomes ready and when a
// ready link is lost (not when close() ends it); on_down runs after every
// pending command's callback has failed.
//
// Replies larger than LinkOptions::max_reply_bytes (when set) close the
// connection as failed before more than that is buffered (replies.h).
//
// The process must ignore SIGPIPE (nearcached does): libuv writes with
// write(2), which raises it when Redis has gone away.
//
// Lifetime: start(), ..., close(cb); the Link may be destroyed once cb has
// run (all its libuv handles are closed). Single-threaded: loop thread only.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "redis/url.h"
#include "redis/util.h"

struct redisReply;

namespace nearcache::redis {

class ReplyParser;
class TlsClient;
struct Transport;

enum class LinkState { idle, resolving, connecting, handshaking, ready, backoff, stopped };

// Reconnect delay after `failures` consecutive failures (0 = the first):
// min_ms doubled per failure up to max_ms, then shortened by jitter_percent
// of itself times u (uniform in [0, 1)); at least 1 ms.
uint64_t backoff_delay(uint64_t failures, uint64_t min_ms, uint64_t max_ms, uint64_t jitter_percent, double u);
const char* link_state_name(LinkState s);

struct Reply {
  enum class Fail { none, timeout, disconnected };
  const redisReply* r = nullptr;  // the reply (may be an error reply) when fail == none
  Fail fail = Fail::none;
  std::string_view why;           // failure or error reply text

  bool failed() const { return fail != Fail::none; }
  bool is_error() const;          // a failure or a Redis error reply
  std::string error() const;      // text of the failure or error reply ("" if neither)
};
using ReplyFn = std::function<void(const Reply&)>;
// Element i of an array reply (a script's result): its string ("" when not a
// string) or its integer (-2 when not an integer).
std::string_view str_at(const redisReply* x, size_t i);
long long int_at(const redisReply* x, size_t i);

struct LinkOptions {
  std::string name = "redis";       // for log lines: "data", "invalidation"
  uint64_t connect_timeout_ms = 1000;
  uint64_t command_timeout_ms = 1000;
  uint64_t reconnect_min_ms = 100, reconnect_max_ms = 10000, jitter_percent = 50;
  // rediss:// endpoints: the TLS context (tls.h). nullptr with a rediss://
  // endpoint: the system's CA store, verification on.
  std::shared_ptr<const TlsClient> tls;
  // A reply (or the part of it buffered so far) above this closes the
  // connection as failed; 0 = no limit.
  uint64_t max_reply_bytes = 0;
  // Where to connect, asked before every attempt (Sentinel: the current
  // master, sentinel.h); unset = the endpoint given. The hook calls `done`
  // once: ok with a host and port (which replace the endpoint's), or !ok with
  // why. It runs inside connect_timeout_ms; an answer after the attempt gave
  // up (or after close) is ignored.
  using Located = std::function<void(bool ok, const std::string& host, uint16_t port, const std::string& why)>;
  std::function<void(Located done)> locate;
  std::string locate_what = "locating Redis";  // the phase a connect timeout names
  // After PING, ROLE must answer "master" or the attempt fails (a master the
  // Sentinels named may have been demoted since); retried after backoff.
  bool require_master = false;
  // Connects and failures logged at debug level only (short Sentinel queries).
  bool quiet = false;
  // Hears every error reply (Redis Cluster: MOVED / ASK of reads and scripts).
  std::function<void(std::string_view error)> on_error_reply;
};

struct LinkStatus {
  LinkState state = LinkState::idle;
  uint64_t since_unix_ms = 0;         // when the state last went from ready to not ready (or started)
  std::string last_error;             // "" until a failure
  uint64_t connects_total = 0;        // times the link became ready
  uint64_t failures_total = 0;        // failed attempts and lost connections
  uint64_t resolves_total = 0;        // uv_getaddrinfo lookups started
  uint64_t timeouts_total = 0;        // command timeouts
  uint64_t pending = 0;               // commands awaiting a reply
  bool tls = false;                   // rediss://
  bool tls_verify = false;            // TLS with chain and name verification
  std::string tls_verify_error;       // the last certificate verification failure ("" if none)
  uint64_t tls_verify_failures_total = 0;
};

class Link {
 public:
  using Done = std::function<void(bool ok, const std::string& error)>;
  using SetupStep = std::function<void(Link&, Done)>;

  Link(uv_loop_t* loop, Endpoint ep, LinkOptions opts);
  ~Link();
  Link(const Link&) = delete;
  Link& operator=(const Link&) = delete;

  // Steps run in order after AUTH and SELECT on every new connection; each
  // may send commands and must call Done once. The link is ready after the last.
  void add_setup(SetupStep step) { setup_.push_back(std::move(step)); }
  // Listeners; the returned id removes them.
  int on_up(std::function<void()> fn);
  int on_down(std::function<void(const std::string& why)> fn);
  // Hears every failed attempt and lost connection (not close()), after on_down.
  int on_fail(std::function<void(const std::string& why)> fn);
  void remove_listener(int id);

  void start();
  // Stops for good: pending commands fail ("link closed"), handles close, then `closed` runs.
  void close(std::function<void()> closed);

  // Ready and not failing: command() will take commands.
  bool ready() const { return state_ == LinkState::ready && !failing_; }
  LinkState state() const { return state_; }
  LinkStatus status() const;
  // Increments every time the link becomes ready (a new Redis connection).
  uint64_t generation() const { return generation_; }
  // Commands sent since start; with generation(), tells whether anything was
  // sent after a given command on this connection.
  uint64_t sent() const { return sent_; }

  bool command(const std::vector<std::string_view>& argv, ReplyFn cb);
  bool command(std::initializer_list<std::string_view> argv, ReplyFn cb);

  // SUBSCRIBE (setup steps only). `fn` gets every pub/sub reply of the
  // connection — the confirmations, then the messages — until it ends;
  // other replies still go to their commands in order.
  using MessageFn = std::function<void(const redisReply* msg)>;
  bool subscribe(const std::vector<std::string_view>& channels, MessageFn fn);

  // Closes the current connection as failed (reconnects after backoff).
  void fail(const std::string& why);
  // Waiting for the next attempt (backoff): attempt now (Sentinel's
  // +switch-master). Otherwise nothing.
  void reconnect_now();

  // Tests: stop reading replies (they wait in the socket) until released.
  void hold_replies(bool hold);

  const Endpoint& endpoint() const { return ep_; }
  // A new password (redis_password_file reloaded): used from the next connection.
  void set_password(const std::string& password) { ep_.password = password, ep_.has_password = true; }
  // New certificates (SIGHUP): used from the next connection.
  void set_tls(std::shared_ptr<const TlsClient> tls) { opts_.tls = std::move(tls); }
  const LinkOptions& options() const { return opts_; }

 private:
  struct Pending;
  struct Resolve;
  Pending* pop_head();

  void attempt();
  void connect_endpoint();
  void on_resolved(int status, struct addrinfo* res);
  void connect_to(const std::string& ip, const std::string& path);
  void handshake();
  void ping_then_setup();
  void run_setup(size_t i);
  void become_ready();
  void teardown(const std::string& why, bool schedule_retry);
  void schedule_retry();
  void arm_command_timer();
  uint64_t backoff_delay();
  bool send(int argc, const char** argv, const size_t* lens, ReplyFn cb);
  void on_data(const char* bytes, size_t len);
  void dispatch(redisReply* reply);

  static void on_tr_connected(void* self);
  static void on_tr_data(void* self, const char* bytes, size_t len);
  static void on_tr_failed(void* self, const std::string& why);
  static void on_connect_timer(uv_timer_t* t);
  static void on_retry_timer(uv_timer_t* t);
  static void on_command_timer(uv_timer_t* t);

  uv_loop_t* loop_;
  Endpoint ep_;
  LinkOptions opts_;
  LinkState state_ = LinkState::idle;
  Transport* tr_ = nullptr;           // the connection, while there is one
  ReplyParser* reader_ = nullptr;     // its reply parser
  bool dispatching_ = false;          // inside on_data: teardown leaves the reader to it
  ReplyParser* dead_reader_ = nullptr;  // torn down while dispatching: freed by on_data
  Resolve* resolving_ = nullptr;      // the lookup in flight, if any
  bool resolve_wanted_ = false;       // an attempt waits for the lookup in flight
  std::vector<std::string> addrs_;    // last resolved addresses, tried in turn
  size_t next_addr_ = 0;
  uv_timer_t connect_timer_, retry_timer_, command_timer_;
  int handles_open_ = 0;
  std::function<void()> closed_;
  std::vector<SetupStep> setup_;
  struct Listener {
    int id;
    std::function<void()> up;
    std::function<void(const std::string&)> down;
    std::function<void(const std::string&)> failed;
  };
  std::vector<Listener> listeners_;
  int next_listener_ = 1;
  Pending* head_ = nullptr;           // commands in send order (replies come in this order)
  Pending* tail_ = nullptr;
  uint64_t pending_count_ = 0;
  uint64_t attempt_no_ = 0, generation_ = 0, sent_ = 0, setup_token_ = 0;
  bool hold_ = false;
  bool was_ready_ = false;
  bool failing_ = false;              // fail() called: teardown on the next loop turn
  std::string fail_reason_;
  MessageFn sub_fn_;                  // SUBSCRIBE sent on this connection: pub/sub replies go here
  Throttle fail_log_{30000};
  std::string phase_;                 // what the connect timer interrupts: "resolving x", "connecting to y", ...
  LinkStatus st_;
  uint64_t rng_;
  // Outlives the Link: a locate answer after close() finds nullptr here.
  std::shared_ptr<Link*> alive_;
  uint64_t locate_token_ = 0;         // the attempt a locate answer belongs to
};

}  // namespace nearcache::redis
