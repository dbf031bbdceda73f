// daemon/redis/atomics.cc — see atomics.h.
#include "redis/atomics.h"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <random>
#include <vector>

#include "redis/slots.h"
#include "redis/util.h"
#include "redis/value.h"

namespace nearcache::redis {

namespace {

AtomicResult unavailable(const std::string& why) {
  AtomicResult r;
  r.kind = AtomicResult::Kind::unavailable;
  r.error = why;
  return r;
}

}  // namespace

// The outcome of a reply that is an error or not the operation's shape
// ("OP: why"), counted in errors_total.
AtomicResult Atomics::failed(const char* op, const Reply& r) {
  st_.errors_total++;
  return unavailable(std::string(op) + ": " + (r.is_error() ? r.error() : std::string("unexpected reply")));
}

struct Atomics::Wait {
  Atomics* a;
  uint64_t id;
  std::string key;
  uint64_t token, lease_ms, deadline;  // deadline: uv_now time
  AtomicFn cb;
  uv_timer_t timer;
  uint64_t backoff;
  bool polling = false, again = false;
};

Atomics::Atomics(uv_loop_t* loop, Link* link, Scripts* scripts, WriteBehind* queue, const Config& cfg)
    : loop_(loop), link_(link), scripts_(scripts), queue_(queue), cfg_(cfg) {
  std::random_device rd;
  char buf[17];
  snprintf(buf, sizeof buf, "%08x%08x", rd(), rd());
  host_id_ = buf;
}

Atomics::~Atomics() { close(); }

std::string Atomics::token_string(uint64_t token) const { return host_id_ + ":" + std::to_string(token); }

std::string Atomics::lease_key(std::string_view key) const {
  // Redis Cluster: in the key's slot (slots.h); one server keeps the older form.
  if (cfg_.shard_home_slot >= 0) return tagged_lease_key(cfg_.prefix + std::string(key));
  std::string k(kLeaseMark);
  k += cfg_.prefix;
  k += key;
  return k;
}

uint64_t Atomics::expiry_of(long long pttl) const {
  const uint64_t now = mono_ms();
  uint64_t e = pttl > 0 ? now + uint64_t(pttl) : 0;
  if (cfg_.local_ttl_max_ms && (e == 0 || e > now + cfg_.local_ttl_max_ms)) e = now + cfg_.local_ttl_max_ms;
  return e;
}

// Runs `send` once the key's queued writes are ahead of it; reports a lost
// link to *done instead. An operation started counts in *started.
bool Atomics::run(std::string_view key, std::function<void()> send, std::shared_ptr<AtomicFn> done,
                  uint64_t* started) {
  if (!link_->ready()) return false;
  queue_->after(key, [this, send = std::move(send), done = std::move(done)](bool ordered) {
    if (!ordered) {
      st_.errors_total++;
      return (*done)(unavailable("Redis connection lost before the operation could be sent"));
    }
    send();
  });
  if (started) (*started)++;
  return true;
}

bool Atomics::add(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry_ms, AtomicFn cb) {
  if (!store_if("NX", key, value, flags, expiry_ms, std::move(cb))) return false;
  st_.adds_total++;
  return true;
}

bool Atomics::replace(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry_ms,
                      AtomicFn cb) {
  if (!store_if("XX", key, value, flags, expiry_ms, std::move(cb))) return false;
  st_.replaces_total++;
  return true;
}

// NX: ok = stored, exists = present (an expired TTL: EXISTS, nothing stored).
// XX: ok = stored, not_found = absent (an expired TTL: DEL, ok if it existed).
bool Atomics::store_if(const char* cond, std::string_view key, std::string_view value, uint8_t flags,
                       uint64_t expiry_ms, AtomicFn cb) {
  auto done = std::make_shared<AtomicFn>(std::move(cb));
  const bool nx = cond[0] == 'N';
  const std::string rk = cfg_.prefix + std::string(key), v = encode_value(value, flags, cfg_.value_format);
  const std::string counter = slot_counter_key(cfg_.prefix, key_slot(rk));
  auto send = [this, rk, v, counter, expiry_ms, done, nx, cond] {
    const AtomicResult::Kind refused = nx ? AtomicResult::Kind::exists : AtomicResult::Kind::not_found;
    auto on = [this, done, nx, refused](const Reply& r) {
      AtomicResult out;
      if (r.is_error()) {
        out = failed(nx ? "ADD" : "REPLACE", r);
      } else if (r.r->type == REDIS_REPLY_INTEGER) {  // EXISTS (NX), DEL (XX)
        out.kind = (r.r->integer != 0) == nx ? refused : AtomicResult::Kind::ok;
      } else {
        out.kind = r.r->type == REDIS_REPLY_NIL ? refused : AtomicResult::Kind::ok;
      }
      (*done)(out);
    };
    // The write and the slot counter's bump in one transaction (slots.h); the
    // reply of interest is the first of EXEC's.
    const uint64_t now = mono_ms();
    const bool expired = expiry_ms && expiry_ms <= now;
    if (expired && nx) {
      if (!link_->command({"EXISTS", rk}, on)) (*done)(unavailable("Redis is not connected"));
      return;
    }
    if (!link_->command({"MULTI"}, [](const Reply&) {})) return (*done)(unavailable("Redis is not connected"));
    // A command refused while queued (MOVED on a cluster, OOM) makes EXEC
    // answer EXECABORT: the refusal is what the caller must see (cluster.cc
    // sends an ADD answered MOVED to the new master).
    auto queued_err = std::make_shared<std::string>();
    auto note = [queued_err](const Reply& r) {
      if (!r.failed() && r.is_error() && queued_err->empty()) *queued_err = r.error();
    };
    if (expired) link_->command({"DEL", rk}, note);
    else if (expiry_ms) link_->command({"SET", rk, v, cond, "PX", std::to_string(expiry_ms - now)}, note);
    else link_->command({"SET", rk, v, cond}, note);
    link_->command({"INCR", counter}, note);
    link_->command({"EXEC"}, [this, on, done, nx, queued_err](const Reply& r) {
      if (!r.failed() && r.is_error() && !queued_err->empty()) {
        if (queued_err->rfind("MOVED ", 0) != 0) st_.errors_total++;  // a MOVED is sent again, not an error
        return (*done)(unavailable(std::string(nx ? "ADD: " : "REPLACE: ") + *queued_err));
      }
      if (r.is_error() || r.r->type != REDIS_REPLY_ARRAY || r.r->elements < 1) {
        Reply e = r;
        if (!r.is_error()) e.fail = Reply::Fail::disconnected, e.why = "the transaction was not executed";
        return on(e);
      }
      Reply first = r;
      first.r = r.r->element[0];
      on(first);
    });
  };
  return run(key, std::move(send), done);
}

namespace {

const char* kUnlock = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";
// ARGV: token, ms, replace ('1'), max ms. 0: not the holder's; 1: extended.
const char* kExtend =
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end "
    "local t = redis.call('PTTL', KEYS[1]) if t < 0 then t = 0 end "
    "local n = tonumber(ARGV[2]) if ARGV[3] ~= '1' then n = n + t end "
    "redis.call('PEXPIRE', KEYS[1], math.min(n, tonumber(ARGV[4]))) return 1";
const char* kQuery =
    "local v = redis.call('GET', KEYS[1]) if not v then return {} end return {v, redis.call('PTTL', KEYS[1])}";

}  // namespace

bool Atomics::lock(LockOp op, std::string_view name, std::string_view token, uint64_t ms, uint64_t max_ms,
                   AtomicFn cb) {
  auto done = std::make_shared<AtomicFn>(std::move(cb));
  // Redis Cluster: in the slot of the name (slots.h); one server: kLockMark + prefix + name.
  std::string lk;
  if (cfg_.shard_home_slot >= 0) {
    lk = tagged_lock_key(cfg_.prefix + std::string(name));
  } else {
    lk.assign(kLockMark);
    lk += cfg_.prefix;
    lk += name;
  }
  const std::string tok(token), ttl = std::to_string(std::clamp<uint64_t>(ms, 1, std::max<uint64_t>(max_ms, 1))),
                    max = std::to_string(std::max<uint64_t>(max_ms, 1));
  auto send = [this, op, lk, tok, ttl, max, done] {
    auto on = [this, op, done](const Reply& r) {
      AtomicResult out;
      const redisReply* x = r.is_error() ? nullptr : r.r;
      if (!x) {
        st_.errors_total++;
        return (*done)(unavailable("lock: " + r.error()));
      }
      using K = AtomicResult::Kind;
      switch (op) {
        case LockOp::acquire: out.kind = x->type == REDIS_REPLY_NIL ? K::exists : K::ok; break;
        case LockOp::query:
          if (x->type == REDIS_REPLY_ARRAY && x->elements == 2) {
            out.kind = K::ok;
            out.value.assign(str_at(x, 0));
            out.number = int_at(x, 1);
          } else {
            out.kind = K::not_found;
          }
          break;
        default: out.kind = x->type == REDIS_REPLY_INTEGER && x->integer == 1 ? K::ok : K::not_found;
      }
      (*done)(out);
    };
    bool sent;
    switch (op) {
      case LockOp::acquire: sent = link_->command({"SET", lk, tok, "NX", "PX", ttl}, on); break;
      case LockOp::release: sent = link_->command({"EVAL", kUnlock, "1", lk, tok}, on); break;
      case LockOp::query: sent = link_->command({"EVAL", kQuery, "1", lk}, on); break;
      default:
        sent = link_->command({"EVAL", kExtend, "1", lk, tok, ttl, op == LockOp::extend_replace ? "1" : "0", max}, on);
    }
    if (!sent) (*done)(unavailable("Redis is not connected"));
  };
  return run(name, std::move(send), done);
}

bool Atomics::pttl(std::string_view key, AtomicFn cb) {
  auto done = std::make_shared<AtomicFn>(std::move(cb));
  const std::string rk = cfg_.prefix + std::string(key);
  auto send = [this, rk, done] {
    const bool sent = link_->command({"PTTL", rk}, [this, done](const Reply& r) {
      AtomicResult out;
      if (r.is_error() || r.r->type != REDIS_REPLY_INTEGER) {
        out = failed("PTTL", r);
      } else {
        out.kind = AtomicResult::Kind::ok;
        out.number = r.r->integer;
      }
      (*done)(out);
    });
    if (!sent) (*done)(unavailable("Redis is not connected"));
  };
  return run(key, std::move(send), done, &st_.ttls_total);
}

bool Atomics::incr(std::string_view key, __int128 delta, AtomicFn cb) {
  auto done = std::make_shared<AtomicFn>(std::move(cb));
  const std::string rk = cfg_.prefix + std::string(key);
  // delta = hi * 2^32 + lo with 0 <= lo < 2^32: each half is exact in a Lua number.
  const std::string hi = std::to_string(int64_t(delta >> 32)), lo = std::to_string(uint64_t(delta & 0xffffffffu));
  const std::string counter = slot_counter_key(cfg_.prefix, key_slot(rk));
  auto send = [this, rk, counter, hi, lo, done] {
    const bool sent = scripts_->eval(Script::incr, {rk, counter}, {hi, lo}, [this, done](const Reply& r) {
      AtomicResult out;
      const std::string_view s = r.is_error() ? std::string_view() : str_at(r.r, 0);
      __int128 v = 0;
      if (s == "ok" && parse_msgpack_int(str_at(r.r, 1), &v)) {
        out.kind = AtomicResult::Kind::ok;
        out.number = int64_t(v);
        out.value.assign(str_at(r.r, 1));
        out.expiry_ms = expiry_of(int_at(r.r, 2));
        out.flags = uint8_t(int_at(r.r, 3));
      } else if (s == "missing") {
        out.kind = AtomicResult::Kind::not_found;
      } else if (s == "notint") {
        out.kind = AtomicResult::Kind::not_integer;
      } else if (s == "range") {
        out.kind = AtomicResult::Kind::out_of_range;
      } else {
        out = failed("INCR", r);
      }
      (*done)(out);
    });
    if (!sent) (*done)(unavailable("Redis is not connected"));
  };
  return run(key, std::move(send), done, &st_.incrs_total);
}

bool Atomics::lease(std::string_view key, uint64_t token, uint64_t lease_ms, AtomicFn cb) {
  auto done = std::make_shared<AtomicFn>(std::move(cb));
  const std::string rk = cfg_.prefix + std::string(key), lk = lease_key(key), tok = token_string(token),
                    ms = std::to_string(std::max<uint64_t>(lease_ms, 1)),
                    max = std::to_string(relay_max_stored(cfg_)),
                    counter = slot_counter_key(cfg_.prefix, key_slot(rk));
  auto send = [this, rk, lk, counter, tok, ms, max, done] {
    const bool sent = scripts_->eval(Script::lease, {rk, lk, counter}, {tok, ms, max}, [this, done](const Reply& r) {
      AtomicResult out;
      const std::string_view s = r.is_error() ? std::string_view() : str_at(r.r, 0);
      if (s == "value") {
        out.kind = AtomicResult::Kind::value;
        std::string_view v;
        decode_value(str_at(r.r, 1), &v, &out.flags);
        out.value.assign(v);
        out.expiry_ms = expiry_of(int_at(r.r, 2));
      } else if (s == "granted") {
        out.kind = AtomicResult::Kind::granted;
        const std::string_view c = str_at(r.r, 1);
        int64_t v = 0;
        for (char ch : c) v = ch >= '0' && ch <= '9' && v >= 0 ? v * 10 + (ch - '0') : -1;
        // A large value Redis keeps: the holder's SET replaces it, plainly. A
        // counter that is not a number compares with nothing: refused.
        out.fill_base = int_at(r.r, 2) == 1 ? kFillPlain : c.empty() ? kFillMissing : v > 0 ? v : kFillRefuse;
      } else if (s == "held") {
        out.kind = AtomicResult::Kind::held;
        const long long left = int_at(r.r, 1);
        out.retry_ms = left > 0 ? uint64_t(left) : 1;
      } else {
        out = failed("LEASE", r);
      }
      (*done)(out);
    });
    if (!sent) (*done)(unavailable("Redis is not connected"));
  };
  return run(key, std::move(send), done, &st_.leases_total);
}

bool Atomics::release(std::string_view key, uint64_t token, AtomicFn cb) {
  auto done = std::make_shared<AtomicFn>(std::move(cb));
  const std::string lk = lease_key(key), tok = token_string(token);
  // After the key's queued writes: a holder's SET must reach Redis before its
  // lease ends, or a waiter elsewhere would take the lease and compute again.
  auto send = [this, lk, tok, done] {
    const bool sent = scripts_->eval(Script::release, {lk}, {tok}, [this, done](const Reply& r) {
      AtomicResult out;
      if (r.is_error() || r.r->type != REDIS_REPLY_INTEGER) {
        out = failed("RELEASE", r);
      } else {
        out.kind = r.r->integer ? AtomicResult::Kind::ok : AtomicResult::Kind::not_found;
      }
      (*done)(out);
    });
    if (!sent) (*done)(unavailable("Redis is not connected"));
  };
  return run(key, std::move(send), done, &st_.releases_total);
}

// ------------------------------------------------------------ lease waits

uint64_t Atomics::wait_lease(std::string_view key, uint64_t token, uint64_t lease_ms, uint64_t deadline_ms,
                             AtomicFn cb) {
  auto* w = new Wait;
  w->a = this;
  w->id = next_wait_++;
  w->key = std::string(key);
  w->token = token;
  w->lease_ms = lease_ms;
  const uint64_t now = mono_ms();
  w->deadline = uv_now(loop_) + (deadline_ms > now ? deadline_ms - now : 0);
  w->cb = std::move(cb);
  w->backoff = cfg_.lease_poll_min_ms;
  uv_timer_init(loop_, &w->timer);
  w->timer.data = w;
  waits_[w->id] = w;
  st_.lease_waits++;
  // First poll after the minimum delay: the caller has just seen the lease held.
  uv_timer_start(&w->timer, [](uv_timer_t* t) { auto* x = static_cast<Wait*>(t->data); x->a->poll(x); },
                 std::min<uint64_t>(w->backoff, w->deadline > uv_now(loop_) ? w->deadline - uv_now(loop_) : 0), 0);
  return w->id;
}

void Atomics::poll(Wait* w) {
  if (uv_now(loop_) >= w->deadline) {
    AtomicResult r;
    r.kind = AtomicResult::Kind::timeout;
    return finish_wait(w, &r);
  }
  w->polling = true;
  w->again = false;
  st_.lease_polls_total++;
  const uint64_t id = w->id;
  const bool sent = lease(w->key, w->token, w->lease_ms, [this, id](const AtomicResult& r) {
    auto it = waits_.find(id);
    if (it == waits_.end()) return;  // cancelled
    Wait* w = it->second;
    w->polling = false;
    if (r.kind != AtomicResult::Kind::held) return finish_wait(w, &r);
    if (w->again) return poll(w);
    const uint64_t now = uv_now(loop_);
    uint64_t delay = std::min(w->backoff, r.retry_ms + 1);
    w->backoff = std::min(w->backoff * 2, cfg_.lease_poll_max_ms);
    if (now + delay > w->deadline) delay = w->deadline > now ? w->deadline - now : 0;
    uv_timer_start(&w->timer, [](uv_timer_t* t) { auto* x = static_cast<Wait*>(t->data); x->a->poll(x); }, delay, 0);
  });
  if (!sent) {
    w->polling = false;
    const AtomicResult r = unavailable("Redis is not connected");
    finish_wait(w, &r);
  }
}

void Atomics::finish_wait(Wait* w, const AtomicResult* r) {
  waits_.erase(w->id);
  uv_timer_stop(&w->timer);
  auto cb = std::move(w->cb);
  uv_close(reinterpret_cast<uv_handle_t*>(&w->timer), [](uv_handle_t* h) { delete static_cast<Wait*>(h->data); });
  if (r && cb) cb(*r);
}

void Atomics::cancel_wait(uint64_t id) {
  auto it = waits_.find(id);
  if (it != waits_.end()) finish_wait(it->second, nullptr);
}

void Atomics::wake(std::string_view key) {
  std::vector<Wait*> ws;
  for (auto& [id, w] : waits_)
    if (w->key == key) ws.push_back(w);
  for (Wait* w : ws) {
    if (w->polling) {
      w->again = true;
      continue;
    }
    uv_timer_stop(&w->timer);
    poll(w);
  }
}

void Atomics::close() {
  std::vector<Wait*> ws;
  for (auto& [id, w] : waits_) ws.push_back(w);
  for (Wait* w : ws) finish_wait(w, nullptr);
}

AtomicStats Atomics::stats() const {
  AtomicStats s = st_;
  s.lease_waits = waits_.size();
  return s;
}

}  // namespace nearcache::redis
