// daemon/redis/link.cc — see link.h.
#include "redis/link.h"

#include <arpa/inet.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <spdlog/spdlog.h>

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

// ------------------------------------------------------------ poll adapter
//
// The adapter of hiredis 0.14 (adapters/libuv.h) returns early when libuv
// reports a socket error as a status (libuv does so for POLLERR: a refused
// connect, a reset connection), so hiredis never learns of the error and the
// connection hangs. This one is the same but hands such events to hiredis,
// whose read or write then finds the error. It can also hold replies (tests).

struct Link::Events {
  redisAsyncContext* ac = nullptr;
  Link* link = nullptr;
  uv_poll_t handle;
  int want = 0;  // what hiredis asked for
  bool hold = false;

  void update() {
    int ev = want;
    if (hold) ev &= ~UV_READABLE;
    if (ev) uv_poll_start(&handle, ev, on_poll);
    else uv_poll_stop(&handle);
  }
  static void on_poll(uv_poll_t* h, int status, int events) {
    auto* p = static_cast<Events*>(h->data);
    if (!p->ac) return;
    if (status < 0) events = p->want & (p->hold ? ~UV_READABLE : ~0);
    if (events & UV_READABLE) redisAsyncHandleRead(p->ac);
    if (p->ac && (events & UV_WRITABLE)) redisAsyncHandleWrite(p->ac);
  }
  static void add_read(void* d) { static_cast<Events*>(d)->want |= UV_READABLE, static_cast<Events*>(d)->update(); }
  static void del_read(void* d) { static_cast<Events*>(d)->want &= ~UV_READABLE, static_cast<Events*>(d)->update(); }
  static void add_write(void* d) { static_cast<Events*>(d)->want |= UV_WRITABLE, static_cast<Events*>(d)->update(); }
  static void del_write(void* d) { static_cast<Events*>(d)->want &= ~UV_WRITABLE, static_cast<Events*>(d)->update(); }
  static void cleanup(void* d) {
    auto* p = static_cast<Events*>(d);
    p->ac = nullptr;
    if (p->link && p->link->ev_ == p) p->link->ev_ = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(&p->handle), [](uv_handle_t* h) { delete static_cast<Events*>(h->data); });
  }
  static Events* attach(redisAsyncContext* ac, uv_loop_t* loop, Link* link) {
    auto* p = new Events;
    if (uv_poll_init(loop, &p->handle, ac->c.fd) != 0) {
      delete p;
      return nullptr;
    }
    p->ac = ac;
    p->link = link;
    p->hold = link->hold_;
    p->handle.data = p;
    ac->ev.data = p;
    ac->ev.addRead = add_read;
    ac->ev.delRead = del_read;
    ac->ev.addWrite = add_write;
    ac->ev.delWrite = del_write;
    ac->ev.cleanup = cleanup;
    return p;
  }
};

// ------------------------------------------------------------ commands

// One command awaiting its reply; hiredis owns the pointer until it calls
// on_reply, which it always does exactly once (with nullptr when the context
// is freed before the reply came).
struct Link::Pending {
  Link* link;
  Pending *prev = nullptr, *next = nullptr;
  uint64_t deadline = 0;
  ReplyFn cb;
  bool done = false;  // the callback already ran (timed out)
};

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
}

Link::~Link() {
  // close() must have completed: hiredis and libuv hold pointers to us until then.
  if (handles_open_ != 0 || ac_)
    spdlog::critical("redis {} link destroyed while open; call close() and run the loop first", opts_.name);
}

int Link::on_up(std::function<void()> fn) {
  listeners_.push_back({next_listener_, std::move(fn), nullptr});
  return next_listener_++;
}

int Link::on_down(std::function<void(const std::string&)> fn) {
  listeners_.push_back({next_listener_, nullptr, std::move(fn)});
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
  // A numeric address: hiredis's own getaddrinfo call returns without a lookup.
  redisAsyncContext* ac = path.empty() ? redisAsyncConnect(ip.c_str(), ep_.port) : redisAsyncConnectUnix(path.c_str());
  if (!ac) {
    teardown(phase_ + ": out of memory", true);
    return;
  }
  if (ac->err) {
    const std::string why = phase_ + ": " + ac->errstr;
    redisAsyncFree(ac);
    teardown(why, true);
    return;
  }
  ev_ = Events::attach(ac, loop_, this);
  if (!ev_) {
    redisAsyncFree(ac);
    teardown(phase_ + ": cannot watch the socket", true);
    return;
  }
  ac->data = this;
  ac_ = ac;
  redisAsyncSetConnectCallback(ac, on_connect_cb);
  redisAsyncSetDisconnectCallback(ac, on_disconnect_cb);
}

void Link::on_connect_cb(const redisAsyncContext* ac, int status) {
  Link* self = static_cast<Link*>(ac->data);
  if (!self || self->ac_ != ac) return;
  if (status != REDIS_OK) {
    // hiredis frees the context itself right after this callback.
    const std::string why = self->phase_ + ": " + ac->errstr;
    self->ac_ = nullptr;
    self->teardown(why, true);
    return;
  }
  self->handshake();
}

void Link::on_disconnect_cb(const redisAsyncContext* ac, int status) {
  Link* self = static_cast<Link*>(ac->data);
  if (!self || self->ac_ != ac) return;  // our own teardown, or a stale context
  // hiredis lost the connection (EOF, I/O or protocol error) and is freeing
  // the context; pending callbacks have already failed.
  const std::string why = std::string("connection lost: ") + (ac->errstr[0] ? ac->errstr : "closed");
  self->ac_ = nullptr;
  self->teardown(why, true);
}

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
        run_setup(0);
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
  spdlog::info("redis {}: {} {}{}", opts_.name, st_.connects_total > 1 ? "reconnected to" : "connected to", ep_.masked(),
               failed ? " after " + std::to_string(failed) + " failed attempt(s)" : "");
  st_.since_unix_ms = unix_ms();
  const auto ls = listeners_;
  for (const auto& l : ls)
    if (l.up && state_ == LinkState::ready) l.up();
}

// ------------------------------------------------------------ failure

void Link::fail(const std::string& why) {
  if (state_ == LinkState::stopped || state_ == LinkState::backoff || state_ == LinkState::idle) return;
  // Often called from inside a hiredis callback, where the context must not
  // be freed: stop taking commands now, tear down from the loop.
  if (failing_) return;
  failing_ = true;
  fail_reason_ = why;
  uv_timer_start(&connect_timer_, on_connect_timer, 0, 0);
}

void Link::teardown(const std::string& why, bool retry) {
  uv_timer_stop(&connect_timer_);
  uv_timer_stop(&command_timer_);
  setup_token_++;
  failing_ = false;
  const bool lost = was_ready_;
  was_ready_ = false;
  state_ = retry ? LinkState::backoff : LinkState::stopped;
  if (redisAsyncContext* ac = ac_) {
    ac_ = nullptr;
    fail_reason_ = why;
    // Fails every pending command (their callbacks run with no reply).
    redisAsyncFree(ac);
  }
  // Commands hiredis never saw a reply for are already gone; anything left
  // in our list belongs to a context hiredis freed on its own.
  while (head_) {
    Pending* p = head_;
    head_ = p->next;
    if (head_) head_->prev = nullptr;
    else tail_ = nullptr;
    p->prev = p->next = nullptr;
    pending_count_--;
    p->link = nullptr;  // hiredis still owns it until its callback
    if (!p->done) {
      p->done = true;
      Reply r;
      r.fail = Reply::Fail::disconnected;
      r.why = why;
      p->cb(r);
    }
  }
  subs_.clear();
  if (why != "link closed") {
    st_.failures_total++;
    if (st_.last_error != why || lost) {
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
  if (!ac_ || failing_ || (state_ != LinkState::ready && state_ != LinkState::handshaking)) return false;
  auto* p = new Pending;
  p->link = this;
  p->deadline = uv_now(loop_) + opts_.command_timeout_ms;
  p->cb = std::move(cb);
  if (redisAsyncCommandArgv(ac_, on_reply, p, argc, argv, lens) != REDIS_OK) {
    delete p;
    return false;
  }
  p->prev = tail_;
  if (tail_) tail_->next = p;
  else head_ = p;
  tail_ = p;
  pending_count_++;
  sent_++;
  arm_command_timer();
  return true;
}

void Link::on_reply(redisAsyncContext* ac, void* reply, void* priv) {
  auto* p = static_cast<Pending*>(priv);
  Link* self = p->link;
  if (self) {
    if (p->prev) p->prev->next = p->next;
    else self->head_ = p->next;
    if (p->next) p->next->prev = p->prev;
    else self->tail_ = p->prev;
    self->pending_count_--;
    if (!reply && self->ac_ == ac && !self->failing_) {
      // hiredis is freeing a context it lost: the link is down from here on
      // (on_disconnect_cb finishes the teardown once every callback ran).
      self->state_ = LinkState::backoff;
      self->failing_ = true;
      self->fail_reason_ = std::string("connection lost: ") + (ac->errstr[0] ? ac->errstr : "closed");
    }
  }
  if (!p->done) {
    p->done = true;
    Reply r;
    if (reply) {
      r.r = static_cast<redisReply*>(reply);
      if (r.r->type == REDIS_REPLY_ERROR) r.why = std::string_view(r.r->str, r.r->len);
    } else {
      r.fail = Reply::Fail::disconnected;
      r.why = self ? std::string_view(self->fail_reason_) : std::string_view("link closed");
    }
    p->cb(r);
  }
  delete p;
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

struct Link::Sub {
  MessageFn fn;
};

bool Link::subscribe(const std::vector<std::string_view>& channels, MessageFn fn) {
  if (!ac_ || failing_ || (state_ != LinkState::ready && state_ != LinkState::handshaking)) return false;
  std::vector<const char*> a{"SUBSCRIBE"};
  std::vector<size_t> l{9};
  for (auto c : channels) a.push_back(c.data()), l.push_back(c.size());
  auto sub = std::make_unique<Sub>();
  sub->fn = std::move(fn);
  auto on_message = [](redisAsyncContext*, void* reply, void* priv) {
    // nullptr: the context is being freed; the Sub is freed by teardown after that.
    if (reply) static_cast<Sub*>(priv)->fn(static_cast<redisReply*>(reply));
  };
  if (redisAsyncCommandArgv(ac_, on_message, sub.get(), int(a.size()), a.data(), l.data()) != REDIS_OK) return false;
  subs_.push_back(std::move(sub));
  sent_++;
  return true;
}

void Link::hold_replies(bool hold) {
  hold_ = hold;
  if (ev_) {
    ev_->hold = hold;
    ev_->update();
  }
}

}  // namespace nearcache::redis
