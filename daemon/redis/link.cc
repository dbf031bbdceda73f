// daemon/redis/link.cc — see link.h.
#include "redis/link.h"

#include <arpa/inet.h>
#include <hiredis/hiredis.h>
#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <spdlog/spdlog.h>

#include "redis/replies.h"
#include "redis/tls.h"
#include "redis/transport.h"
#include "redis/util.h"

namespace nearcache::redis {

const char* link_state_name(LinkState s) {
  switch (s) {
    case LinkState::idle: return "idle";
    case LinkState::resolving: return "resolving";
    case LinkState::connecting: return "connecting";
    case LinkState::handshaking: return "handshaking";
    case LinkState::ready: return "connected";
    case LinkState::backoff: return "reconnecting";
    case LinkState::stopped: return "stopped";
  }
  return "?";
}

std::string_view str_at(const redisReply* x, size_t i) {
  if (x->type != REDIS_REPLY_ARRAY || i >= x->elements || x->element[i]->type != REDIS_REPLY_STRING) return {};
  return {x->element[i]->str, x->element[i]->len};
}

long long int_at(const redisReply* x, size_t i) {
  if (x->type != REDIS_REPLY_ARRAY || i >= x->elements || x->element[i]->type != REDIS_REPLY_INTEGER) return -2;
  return x->element[i]->integer;
}

bool Reply::is_error() const { return failed() || (r && r->type == REDIS_REPLY_ERROR); }

std::string Reply::error() const {
  if (failed()) return std::string(why);
  if (r && r->type == REDIS_REPLY_ERROR) return std::string(r->str, r->len);
  return {};
}

// ------------------------------------------------------------ commands

// One command awaiting its reply, in the Link's FIFO (replies come in send order).
struct Link::Pending {
  Pending *prev = nullptr, *next = nullptr;
  uint64_t deadline = 0;
  ReplyFn cb;
  bool done = false;  // the callback already ran (timed out)
};

// Unlinks the oldest command waiting for its reply (there is one).
Link::Pending* Link::pop_head() {
  Pending* p = head_;
  head_ = p->next;
  if (head_) head_->prev = nullptr;
  else tail_ = nullptr;
  pending_count_--;
  return p;
}

// A lookup in flight; outlives the Link if the Link closes meanwhile.
struct Link::Resolve {
  uv_getaddrinfo_t req;
  Link* link;
};

Link::Link(uv_loop_t* loop, Endpoint ep, LinkOptions opts) : loop_(loop), ep_(std::move(ep)), opts_(std::move(opts)) {
  for (uv_timer_t* t : {&connect_timer_, &retry_timer_, &command_timer_}) {
    uv_timer_init(loop_, t);
    t->data = this;
    handles_open_++;
  }
  // Seeded from the OS: links (and hosts) that fail together must not draw
  // the same jitter, or they would reconnect in step.
  std::random_device rd;
  rng_ = (uint64_t(rd()) << 32 | rd()) ^ uint64_t(uv_hrtime());
  if (rng_ == 0) rng_ = 0x9e3779b97f4a7c15ull;  // xorshift's one fixed point
  st_.since_unix_ms = unix_ms();
  alive_ = std::make_shared<Link*>(this);
}

Link::~Link() {
  *alive_ = nullptr;
  // close() must have completed: libuv holds pointers to us until then.
  if (handles_open_ != 0 || tr_)
    spdlog::critical("redis {} link destroyed while open; call close() and run the loop first", opts_.name);
}

int Link::on_up(std::function<void()> fn) {
  listeners_.push_back({next_listener_, std::move(fn), nullptr, nullptr});
  return next_listener_++;
}

int Link::on_down(std::function<void(const std::string&)> fn) {
  listeners_.push_back({next_listener_, nullptr, std::move(fn), nullptr});
  return next_listener_++;
}

int Link::on_fail(std::function<void(const std::string&)> fn) {
  listeners_.push_back({next_listener_, nullptr, nullptr, std::move(fn)});
  return next_listener_++;
}

void Link::remove_listener(int id) {
  listeners_.erase(std::remove_if(listeners_.begin(), listeners_.end(), [id](const Listener& l) { return l.id == id; }),
                   listeners_.end());
}

LinkStatus Link::status() const {
  LinkStatus s = st_;
  s.state = state_;
  s.pending = pending_count_;
  s.tls = ep_.tls;
  s.tls_verify = ep_.tls && (!opts_.tls || opts_.tls->verify());
  return s;
}

void Link::start() {
  if (state_ != LinkState::idle) return;
  attempt();
}

void Link::close(std::function<void()> closed) {
  if (state_ == LinkState::stopped) return;
  closed_ = std::move(closed);
  teardown("link closed", false);
  state_ = LinkState::stopped;
  *alive_ = nullptr;
  if (resolving_) {
    resolving_->link = nullptr;  // its callback frees it
    uv_cancel(reinterpret_cast<uv_req_t*>(&resolving_->req));
    resolving_ = nullptr;
  }
  for (uv_timer_t* t : {&connect_timer_, &retry_timer_, &command_timer_}) {
    uv_timer_stop(t);
    uv_close(reinterpret_cast<uv_handle_t*>(t), [](uv_handle_t* h) {
      Link* self = static_cast<Link*>(h->data);
      if (--self->handles_open_ == 0 && self->closed_) {
        auto fn = std::move(self->closed_);
        fn();
      }
    });
  }
}

// ------------------------------------------------------------ connecting

void Link::attempt() {
  if (state_ == LinkState::stopped) return;
  uv_timer_start(&connect_timer_, on_connect_timer, opts_.connect_timeout_ms, 0);
  if (!opts_.locate) return connect_endpoint();
  state_ = LinkState::resolving;
  phase_ = opts_.locate_what;
  const uint64_t token = ++locate_token_;
  std::weak_ptr<Link*> alive = alive_;
  opts_.locate([alive, token](bool ok, const std::string& host, uint16_t port, const std::string& why) {
    auto p = alive.lock();
    Link* self = p ? *p : nullptr;
    if (!self || token != self->locate_token_ || self->state_ != LinkState::resolving) return;
    self->locate_token_++;
    if (!ok) return self->teardown(self->phase_ + ": " + why, true);
    if (host != self->ep_.host) self->addrs_.clear(), self->next_addr_ = 0;
    self->ep_.host = host;
    self->ep_.port = port;
    self->connect_endpoint();
  });
}

void Link::connect_endpoint() {
  if (ep_.unix_socket) {
    connect_to("", ep_.path);
    return;
  }
  in6_addr a6;
  in_addr a4;
  if (inet_pton(AF_INET, ep_.host.c_str(), &a4) == 1 || inet_pton(AF_INET6, ep_.host.c_str(), &a6) == 1) {
    connect_to(ep_.host, "");
    return;
  }
  state_ = LinkState::resolving;
  phase_ = "resolving " + ep_.host;
  if (!addrs_.empty() && next_addr_ == SIZE_MAX) {
    // A lookup that finished after the previous attempt gave up: use it once.
    next_addr_ = 1;
    connect_to(addrs_[0], "");
    return;
  }
  resolve_wanted_ = true;
  if (resolving_) {
    phase_ += " (the previous lookup is still running)";
    return;
  }
  auto* r = new Resolve;
  r->link = this;
  r->req.data = r;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  st_.resolves_total++;
  const int rc = uv_getaddrinfo(
      loop_, &r->req,
      [](uv_getaddrinfo_t* req, int status, addrinfo* res) {
        auto* rr = static_cast<Resolve*>(req->data);
        Link* self = rr->link;
        delete rr;
        if (self) self->on_resolved(status, res);
        uv_freeaddrinfo(res);
      },
      ep_.host.c_str(), nullptr, &hints);
  if (rc != 0) {
    delete r;
    teardown("cannot resolve " + ep_.host + ": " + uv_strerror(rc), true);
    return;
  }
  resolving_ = r;
}

void Link::on_resolved(int status, addrinfo* res) {
  resolving_ = nullptr;
  std::vector<std::string> found;
  for (addrinfo* ai = res; status == 0 && ai; ai = ai->ai_next) {
    char buf[INET6_ADDRSTRLEN];
    const void* a = ai->ai_family == AF_INET ? static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(ai->ai_addr)->sin_addr)
                                             : static_cast<const void*>(&reinterpret_cast<sockaddr_in6*>(ai->ai_addr)->sin6_addr);
    if ((ai->ai_family == AF_INET || ai->ai_family == AF_INET6) && inet_ntop(ai->ai_family, a, buf, sizeof buf) &&
        std::find(found.begin(), found.end(), buf) == found.end())
      found.push_back(buf);
  }
  if (!resolve_wanted_) {
    // The attempt that asked timed out; keep the answer for the next one.
    if (!found.empty()) addrs_ = std::move(found), next_addr_ = SIZE_MAX;
    return;
  }
  resolve_wanted_ = false;
  if (found.empty()) {
    teardown("cannot resolve " + ep_.host + ": " + (status ? uv_strerror(status) : "no IPv4 or IPv6 address"), true);
    return;
  }
  if (found != addrs_) next_addr_ = 0;
  addrs_ = std::move(found);
  if (next_addr_ >= addrs_.size()) next_addr_ = 0;
  connect_to(addrs_[next_addr_++], "");
}

void Link::connect_to(const std::string& ip, const std::string& path) {
  state_ = LinkState::connecting;
  phase_ = "connecting to " + (path.empty() ? (ip.find(':') != std::string::npos ? "[" + ip + "]" : ip) + ":" +
                                                  std::to_string(ep_.port)
                                            : path);
  TransportTarget target;
  target.ip = ip;
  target.port = ep_.port;
  target.path = path;
  if (ep_.tls && !ep_.unix_socket) {
    if (!opts_.tls) {
      std::string err;
      auto c = TlsClient::create(TlsOptions{}, &err);
      if (!c) return teardown(err, true);
      opts_.tls = std::move(c);
    }
    target.tls = opts_.tls;
    target.host = ep_.host;
    phase_ += " (TLS)";
  }
  TransportHandlers h;
  h.ctx = this;
  h.connected = on_tr_connected;
  h.data = on_tr_data;
  h.failed = on_tr_failed;
  std::string err;
  tr_ = transport_open(loop_, target, h, &err);
  if (!tr_) teardown(phase_ + ": " + err, true);
}

void Link::on_tr_connected(void* ctx) {
  Link* self = static_cast<Link*>(ctx);
  self->reader_ = new ReplyParser(self->opts_.max_reply_bytes);
  if (self->hold_) transport_hold(self->tr_, true);
  self->handshake();
}

void Link::on_tr_failed(void* ctx, const std::string& why) {
  Link* self = static_cast<Link*>(ctx);
  // The transport is dead and calls nothing again; tear down from the loop,
  // not from inside whatever wrote or read.
  const bool verify = why.rfind("certificate verification failed", 0) == 0;
  if (verify) {
    self->st_.tls_verify_error = why;
    self->st_.tls_verify_failures_total++;
  }
  const bool up = self->state_ == LinkState::ready || self->state_ == LinkState::handshaking;
  self->fail(up ? "connection lost: " + why : self->phase_ + ": " + why);
}

void Link::on_tr_data(void* ctx, const char* bytes, size_t len) { static_cast<Link*>(ctx)->on_data(bytes, len); }

void Link::handshake() {
  state_ = LinkState::handshaking;
  const uint64_t token = ++setup_token_;
  auto next = [this, token](size_t step) {
    return [this, token, step](const Reply& r) {
      if (token != setup_token_ || state_ != LinkState::handshaking) return;
      if (r.is_error()) {
        fail((step == 0 ? "AUTH failed: " : "SELECT failed: ") + r.error());
        return;
      }
      if (step == 0 && ep_.db != 0) {
        phase_ = "selecting database " + std::to_string(ep_.db);
        const std::string db = std::to_string(ep_.db);
        if (!command({"SELECT", db}, [this, token](const Reply& r2) {
              if (token != setup_token_ || state_ != LinkState::handshaking) return;
              if (r2.is_error()) return fail("SELECT " + std::to_string(ep_.db) + " failed: " + r2.error());
              ping_then_setup();
            }))
          fail("cannot send SELECT");
        return;
      }
      ping_then_setup();
    };
  };
  if (ep_.has_password) {
    phase_ = "authenticating";
    const bool sent = ep_.user.empty() ? command({"AUTH", ep_.password}, next(0))
                                       : command({"AUTH", ep_.user, ep_.password}, next(0));
    if (!sent) fail("cannot send AUTH");
    return;
  }
  Reply none;
  next(0)(none);
}

void Link::ping_then_setup() {
  // Proves the server answers (not stopped, not loading, no NOAUTH) before
  // anyone relies on the link; before the setup steps, which may SUBSCRIBE.
  const uint64_t token = setup_token_;
  phase_ = "waiting for PING";
  if (!command({"PING"}, [this, token](const Reply& r) {
        if (token != setup_token_ || state_ != LinkState::handshaking) return;
        if (r.is_error()) return fail("PING failed: " + r.error());
        if (!opts_.require_master) return run_setup(0);
        phase_ = "checking ROLE";
        if (!command({"ROLE"}, [this, token](const Reply& r2) {
              if (token != setup_token_ || state_ != LinkState::handshaking) return;
              if (r2.is_error()) return fail("ROLE failed: " + r2.error());
              const std::string_view role = str_at(r2.r, 0);
              if (role != "master")
                return fail(ep_.where() + " is not the master (ROLE: " + std::string(role.empty() ? "?" : role) + ")");
              run_setup(0);
            }))
          fail("cannot send ROLE");
      }))
    fail("cannot send PING");
}

void Link::run_setup(size_t i) {
  if (i == setup_.size()) return become_ready();
  const uint64_t token = setup_token_;
  phase_ = "setting up the connection (step " + std::to_string(i + 1) + ")";
  setup_[i](*this, [this, token, i](bool ok, const std::string& err) {
    if (token != setup_token_ || state_ != LinkState::handshaking) return;
    if (!ok) return fail(err);
    run_setup(i + 1);
  });
}

void Link::become_ready() {
  uv_timer_stop(&connect_timer_);
  state_ = LinkState::ready;
  generation_++;
  st_.connects_total++;
  const uint64_t failed = attempt_no_;
  attempt_no_ = 0;
  was_ready_ = true;
  spdlog::log(opts_.quiet ? spdlog::level::debug : spdlog::level::info, "redis {}: {} {}{}", opts_.name, st_.connects_total > 1 ? "reconnected to" : "connected to", ep_.masked(),
               failed ? " after " + std::to_string(failed) + " failed attempt(s)" : "");
  st_.since_unix_ms = unix_ms();
  const auto ls = listeners_;
  for (const auto& l : ls)
    if (l.up && state_ == LinkState::ready) l.up();
}

// ------------------------------------------------------------ failure

void Link::fail(const std::string& why) {
  if (state_ == LinkState::stopped || state_ == LinkState::backoff || state_ == LinkState::idle) return;
  // Often called from inside a reply callback or the transport: stop taking
  // commands now, tear down from the loop.
  if (failing_) return;
  failing_ = true;
  fail_reason_ = why;
  uv_timer_start(&connect_timer_, on_connect_timer, 0, 0);
}

void Link::teardown(const std::string& why, bool retry) {
  uv_timer_stop(&connect_timer_);
  locate_token_++;
  uv_timer_stop(&command_timer_);
  setup_token_++;
  failing_ = false;
  const bool lost = was_ready_;
  was_ready_ = false;
  state_ = retry ? LinkState::backoff : LinkState::stopped;
  if (Transport* t = tr_) {
    tr_ = nullptr;
    transport_close(t);
  }
  if (ReplyParser* r = reader_) {
    reader_ = nullptr;
    if (dispatching_) dead_reader_ = r;  // on_data is using it
    else delete r;
  }
  fail_reason_ = why;
  while (head_) {
    Pending* p = pop_head();
    if (!p->done) {
      p->done = true;
      Reply r;
      r.fail = Reply::Fail::disconnected;
      r.why = why;
      p->cb(r);
    }
    delete p;
  }
  sub_fn_ = nullptr;
  if (why != "link closed") {
    st_.failures_total++;
    if (opts_.quiet) spdlog::debug("redis {}: {}", opts_.name, why);
    else if (st_.last_error != why || lost) {
      if (lost) spdlog::error("redis {}: {}; reconnecting", opts_.name, why);
      else {
        uint64_t skipped = 0;
        if (fail_log_.allow(&skipped) || st_.last_error != why)
          spdlog::warn("redis {}: {}{}", opts_.name, why,
                       skipped ? " (" + std::to_string(skipped) + " similar failures not logged)" : "");
      }
    }
    st_.last_error = why;
  }
  if (lost) st_.since_unix_ms = unix_ms();
  if (lost && retry) {  // close() is not news to the owner
    const auto ls = listeners_;
    for (const auto& l : ls)
      if (l.down) l.down(why);
  }
  if (retry) {
    const auto ls = listeners_;
    for (const auto& l : ls)
      if (l.failed && state_ == LinkState::backoff) l.failed(why);
  }
  if (retry && state_ == LinkState::backoff) schedule_retry();
}

uint64_t backoff_delay(uint64_t failures, uint64_t min_ms, uint64_t max_ms, uint64_t jitter_percent, double u) {
  const uint64_t shift = std::min<uint64_t>(failures, 30);
  uint64_t d = std::min<uint64_t>(max_ms, min_ms << shift);
  d -= uint64_t(double(d) * double(std::min<uint64_t>(jitter_percent, 100)) / 100.0 * u);
  return std::max<uint64_t>(d, 1);
}

uint64_t Link::backoff_delay() {
  rng_ ^= rng_ << 13, rng_ ^= rng_ >> 7, rng_ ^= rng_ << 17;
  const double u = double(rng_ >> 11) / double(1ull << 53);  // [0, 1)
  return redis::backoff_delay(attempt_no_++, opts_.reconnect_min_ms, opts_.reconnect_max_ms, opts_.jitter_percent, u);
}

void Link::schedule_retry() {
  const uint64_t failures = attempt_no_ + 1;
  const uint64_t delay = backoff_delay();
  spdlog::debug("redis {}: next attempt in {} ms ({} consecutive failure(s))", opts_.name, delay, failures);
  uv_timer_start(&retry_timer_, on_retry_timer, delay, 0);
}

void Link::reconnect_now() {
  if (state_ != LinkState::backoff) return;
  uv_timer_stop(&retry_timer_);
  attempt();
}

void Link::on_retry_timer(uv_timer_t* t) { static_cast<Link*>(t->data)->attempt(); }

void Link::on_connect_timer(uv_timer_t* t) {
  Link* self = static_cast<Link*>(t->data);
  if (self->failing_) {
    self->teardown(self->fail_reason_, true);
    return;
  }
  // The lookup, if one runs, goes on; its answer serves the next attempt.
  self->resolve_wanted_ = false;
  self->teardown(self->phase_ + ": timed out after " + std::to_string(self->opts_.connect_timeout_ms) + " ms", true);
}

// ------------------------------------------------------------ commands

bool Link::command(std::initializer_list<std::string_view> argv, ReplyFn cb) {
  return command(std::vector<std::string_view>(argv), std::move(cb));
}

bool Link::command(const std::vector<std::string_view>& argv, ReplyFn cb) {
  const char* a[16];
  size_t l[16];
  std::vector<const char*> va;
  std::vector<size_t> vl;
  const char** ap = a;
  size_t* lp = l;
  if (argv.size() > 16) {
    va.resize(argv.size());
    vl.resize(argv.size());
    ap = va.data();
    lp = vl.data();
  }
  for (size_t i = 0; i < argv.size(); ++i) ap[i] = argv[i].data(), lp[i] = argv[i].size();
  return send(int(argv.size()), ap, lp, std::move(cb));
}

bool Link::send(int argc, const char** argv, const size_t* lens, ReplyFn cb) {
  if (!tr_ || failing_ || (state_ != LinkState::ready && state_ != LinkState::handshaking)) return false;
  char* cmd = nullptr;
  const int n = redisFormatCommandArgv(&cmd, argc, argv, lens);
  if (n < 0) return false;
  std::string err;
  const bool ok = transport_write(tr_, cmd, size_t(n), &err);
  redisFreeCommand(cmd);
  if (!ok) return false;  // the transport failed: fail() tears down on the next turn
  auto* p = new Pending;
  p->deadline = uv_now(loop_) + opts_.command_timeout_ms;
  p->cb = std::move(cb);
  p->prev = tail_;
  if (tail_) tail_->next = p;
  else head_ = p;
  tail_ = p;
  pending_count_++;
  sent_++;
  arm_command_timer();
  return true;
}

// ------------------------------------------------------------ replies

void Link::on_data(const char* bytes, size_t len) {
  if (!reader_) return;
  ReplyParser* rd = reader_;
  std::string err;
  if (!rd->feed(bytes, len, &err)) return fail(err);
  dispatching_ = true;
  bool ok = true;
  for (;;) {
    redisReply* reply = nullptr;
    if (!(ok = rd->next(&reply, &err)) || !reply) break;
    dispatch(reply);
    if (dead_reader_) break;  // torn down (close() from a callback)
  }
  dispatching_ = false;
  if (dead_reader_) {
    delete dead_reader_;
    dead_reader_ = nullptr;
    return;
  }
  if (!ok || !rd->within_bound(&err)) fail(err);
}

void Link::dispatch(redisReply* reply) {
  if (sub_fn_ && is_pubsub(reply)) {
    sub_fn_(reply);
    freeReplyObject(reply);
    return;
  }
  Pending* p = head_;
  if (!p) {
    freeReplyObject(reply);
    return fail("protocol error: a reply without a command");
  }
  pop_head();
  if (!p->done) {
    p->done = true;
    Reply r;
    r.r = reply;
    if (reply->type == REDIS_REPLY_ERROR) r.why = std::string_view(reply->str, reply->len);
    if (reply->type == REDIS_REPLY_ERROR && opts_.on_error_reply) opts_.on_error_reply(r.why);
    p->cb(r);
  }
  delete p;
  freeReplyObject(reply);
  if (!head_) uv_timer_stop(&command_timer_);
}

void Link::arm_command_timer() {
  if (!head_ || uv_is_active(reinterpret_cast<uv_handle_t*>(&command_timer_))) return;
  const uint64_t now = uv_now(loop_);
  uv_timer_start(&command_timer_, on_command_timer, head_->deadline > now ? head_->deadline - now : 0, 0);
}

void Link::on_command_timer(uv_timer_t* t) {
  Link* self = static_cast<Link*>(t->data);
  // Replies come in send order, so the oldest command decides.
  Pending* p = self->head_;
  while (p && p->done) p = p->next;
  if (!p) return;
  const uint64_t now = uv_now(self->loop_);
  if (p->deadline > now) {
    uv_timer_start(&self->command_timer_, on_command_timer, p->deadline - now, 0);
    return;
  }
  self->st_.timeouts_total++;
  const std::string why = "no reply within " + std::to_string(self->opts_.command_timeout_ms) + " ms";
  p->done = true;
  Reply r;
  r.fail = Reply::Fail::timeout;
  r.why = why;
  p->cb(r);
  if (self->state_ == LinkState::handshaking || self->state_ == LinkState::ready)
    self->teardown("Redis did not answer within " + std::to_string(self->opts_.command_timeout_ms) +
                       " ms (redis_command_timeout_ms)",
                   true);
}

bool Link::subscribe(const std::vector<std::string_view>& channels, MessageFn fn) {
  if (!tr_ || failing_ || (state_ != LinkState::ready && state_ != LinkState::handshaking)) return false;
  std::vector<const char*> a{"SUBSCRIBE"};
  std::vector<size_t> l{9};
  for (auto c : channels) a.push_back(c.data()), l.push_back(c.size());
  char* cmd = nullptr;
  const int n = redisFormatCommandArgv(&cmd, int(a.size()), a.data(), l.data());
  if (n < 0) return false;
  std::string err;
  const bool ok = transport_write(tr_, cmd, size_t(n), &err);
  redisFreeCommand(cmd);
  if (!ok) return false;
  sub_fn_ = std::move(fn);
  sent_++;
  return true;
}

void Link::hold_replies(bool hold) {
  hold_ = hold;
  if (tr_ && reader_) transport_hold(tr_, hold);
}

}  // namespace nearcache::redis
