// daemon/engine/engine_redis.cc — the Engine's side of the Redis tier
// (daemon/redis/README.md has the map of hooks):
//
//   - local misses (GET, GET_MANY, HAS_KEY, TOUCH) read through Redis;
//   - local writes are queued for Redis after they are applied (queue_store);
//   - ADD, INCR/DECR and LEASE are decided in Redis, then applied here;
//   - the tier's table hooks (install, drop, drop_all) act on the table;
//   - no client waits for Redis longer than redis_wait_ms: at that deadline a
//     read is a miss and an atomic operation follows redis_down.
//
// A result from Redis is installed in the table only if nothing wrote the key
// on this host since the operation was sent (track/untrack): a later local
// write, an invalidation or a flush is newer than what Redis answered.
#include <spdlog/spdlog.h>

#include "engine/engine.h"
#include "protocol/codec.h"
#include "engine/engine_waits.h"
#include "redis/metrics.h"
#include "redis/tier.h"
#include "writer.h"

namespace nearcache::daemon {

namespace {

using Kind = redis::AtomicResult::Kind;

void ignore(const redis::AtomicResult&) {}

}  // namespace

// ---------------------------------------------------------------- waits

Engine::RedisWait* Engine::open_wait(Session* s, uint64_t id, WaitKind kind, uint64_t deadline) {
  auto w = std::make_unique<RedisWait>();
  w->id = next_rwait_++;
  w->session = s->id;
  w->req = id;
  w->kind = kind;
  w->deadline = deadline;
  RedisWait* p = w.get();
  rwaits_.emplace(p->id, std::move(w));
  rdeadlines_.emplace(deadline, p->id);
  s->outstanding++;
  // Operations whose effect later requests must see hold the connection's
  // later requests back (reads need not: a read that waits on Redis comes
  // first in the connection's order, and a later write cannot change what it
  // answers for the key it asked).
  if (kind == wait_touch || kind == wait_add || kind == wait_incr || kind == wait_lease) s->blocked = p->id;
  if (hooks_.deadlines_changed) hooks_.deadlines_changed();
  return p;
}

Engine::RedisWait* Engine::find_wait(uint64_t wid) {
  auto it = rwaits_.find(wid);
  return it == rwaits_.end() ? nullptr : it->second.get();
}

std::unique_ptr<Engine::RedisWait> Engine::close_wait(uint64_t wid) {
  auto it = rwaits_.find(wid);
  if (it == rwaits_.end()) return nullptr;
  std::unique_ptr<RedisWait> w = std::move(it->second);
  rwaits_.erase(it);
  rdeadlines_.erase({w->deadline, w->id});
  if (Session* t = session(w->session)) {
    if (t->outstanding) t->outstanding--;
    unblock(t, w->id);
  }
  if (w->kind == wait_lease_poll) {
    auto p = lease_polls_.find(w->key);
    if (p != lease_polls_.end() && --p->second == 0) lease_polls_.erase(p);
    lease_polls_total_--;
  }
  return w;
}

void Engine::unblock(Session* s, uint64_t wid) {
  if (s->blocked != wid) return;
  s->blocked = 0;
  if (hooks_.resume) hooks_.resume(s);
}

void Engine::set_wait_deadline(RedisWait* w, uint64_t deadline) {
  rdeadlines_.erase({w->deadline, w->id});
  w->deadline = deadline;
  rdeadlines_.emplace(deadline, w->id);
  if (hooks_.deadlines_changed) hooks_.deadlines_changed();
}

void Engine::expire_waits(uint64_t now) {
  while (!rdeadlines_.empty() && rdeadlines_.begin()->first <= now) {
    std::unique_ptr<RedisWait> w = close_wait(rdeadlines_.begin()->second);
    if (!w) {  // cannot happen: both are updated together
      rdeadlines_.erase(rdeadlines_.begin());
      continue;
    }
    Session* t = session(w->session);
    if (w->kind == wait_lease_poll) {
      tier_->cancel_wait(w->tier_wait);
      if (w->ctx->tracked) w->ctx->tracked = false, untrack(w->key, w->ctx->snap);
    }
    if (!t) continue;
    const std::string why = "Redis did not answer within redis_wait_ms (" + std::to_string(tier_->config().wait_ms) + " ms)";
    switch (w->kind) {
      case wait_get:
      case wait_has_key:
      case wait_touch: reply(t, w->req, Code::not_found); break;
      case wait_get_many: reply_many(t, w->req, w->many->results); break;
      case wait_add:
      case wait_incr:
      case wait_lease: atomic_down(t, w->req, *w->ctx, why); break;
      case wait_lease_poll:
        redis_lease_timeouts_++;
        reply(t, w->req, Code::timeout);
        break;
    }
    mark_dirty(t);
  }
}

void Engine::cancel_waits(uint64_t sid) {
  std::vector<uint64_t> ids;
  for (const auto& [wid, w] : rwaits_)
    if (sid == 0 || w->session == sid) ids.push_back(wid);
  for (uint64_t wid : ids) {
    std::unique_ptr<RedisWait> w = close_wait(wid);
    if (w->kind == wait_lease_poll) {
      tier_->cancel_wait(w->tier_wait);
      if (w->ctx->tracked) w->ctx->tracked = false, untrack(w->key, w->ctx->snap);
    }
    // Other operations still complete in Redis; their callbacks apply them here.
    if (sid != 0) continue;
    if (Session* t = session(w->session)) {
      const uint64_t req = w->req;
      error(t, &req, Code::shutting_down, "SHUTTING_DOWN: the daemon is stopping");
      mark_dirty(t);
    }
  }
}

// ---------------------------------------------------------------- writes seen while Redis decides

Engine::Snap Engine::track(std::string_view key) {
  Tracked& t = tracked_[std::string(key)];
  t.refs++;
  return {t.writes, write_epoch_};
}

bool Engine::untrack(std::string_view key, const Snap& at) {
  auto it = tracked_.find(std::string(key));
  if (it == tracked_.end()) return false;
  const bool same = it->second.writes == at.writes && write_epoch_ == at.epoch;
  if (--it->second.refs == 0) tracked_.erase(it);
  return same;
}

void Engine::wrote(std::string_view key) {
  if (tracked_.empty()) return;
  auto it = tracked_.find(std::string(key));
  if (it != tracked_.end()) it->second.writes++;
}

// ---------------------------------------------------------------- the tier's hooks

redis::TableHooks Engine::table_hooks() {
  redis::TableHooks h;
  h.drop = [this](std::string_view key) { drop(key); };
  h.drop_all = [this](const char* why) { drop_all(why); };
  h.install = [this](std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry) {
    install(key, value, flags, expiry);
  };
  return h;
}

void Engine::install(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry) {
  if (cfg_.max_ttl_ms) {
    const uint64_t ceiling = shm::expiry_from_ttl(int64_t(std::min<uint64_t>(cfg_.max_ttl_ms, INT64_MAX)), now_ms());
    if (expiry == 0 || expiry > ceiling) expiry = ceiling;
  }
  if (w_->set(key, value, flags, expiry) != shm::Status::ok) return;  // over this host's limits: not kept here
  wrote(key);
  after_store(key, value, flags, expiry);
}

void Engine::drop(std::string_view key) {
  w_->del(key);
  wrote(key);
}

void Engine::drop_all(const char* why) {
  // Every entry may be stale: remove them all before anything else runs, so
  // that no reader serves one from shared memory afterwards (a sliced clear
  // would leave them readable until it finished).
  const uint64_t t0 = mono_us();
  const uint64_t cid = w_->clear_begin("");
  while (!w_->clear_step(1 << 16)) {
  }
  const uint64_t removed = w_->clear_take(cid);
  write_epoch_++;
  finish_clears();  // client CLEARs pending behind it are complete too
  spdlog::info("redis: {}: flushed this host's table ({} entries, {:.1f} ms)", why, removed,
               double(mono_us() - t0) / 1000.0);
}

void Engine::queue_store(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry) {
  if (!tier_) return;
  if (expiry != 0 && expiry <= now_ms()) {  // ttl <= 0: the key is gone
    tier_->del(key);
    return;
  }
  // A write the queue had no room for never reaches Redis: this host must not
  // go on serving it either (the queue logged and counted the drop).
  if (tier_->set(key, value, flags, expiry) == redis::Enqueued::dropped) w_->del(key);
}

void Engine::wake_pollers(std::string_view key) {
  if (lease_polls_.empty() || !tier_) return;
  if (lease_polls_.count(std::string(key))) tier_->atomics().wake(key);
}

// ---------------------------------------------------------------- read-through

void Engine::redis_read(Session* s, uint64_t id, WaitKind kind, std::string_view key, uint64_t expiry) {
  RedisWait* w = open_wait(s, id, kind, now_ms() + tier_->config().wait_ms);
  w->key.assign(key);
  w->expiry = expiry;
  const uint64_t wid = w->id;
  redis::Fetched now;
  const redis::Lookup l = tier_->get(key, &now, [this, wid](const redis::Fetched& f) {
    std::unique_ptr<RedisWait> w = close_wait(wid);
    if (!w) return;  // answered at its deadline, or the client left
    Session* t = session(w->session);
    if (!t) return;
    read_done(t, w->req, w->kind, w->key, w->expiry, f.kind == redis::Fetched::Kind::hit ? &f : nullptr);
    mark_dirty(t);
  });
  if (l == redis::Lookup::pending) return;
  close_wait(wid);
  read_done(s, id, kind, key, expiry, l == redis::Lookup::hit ? &now : nullptr);
}

void Engine::read_done(Session* s, uint64_t id, WaitKind kind, std::string_view key, uint64_t expiry,
                       const redis::Fetched* hit) {
  switch (kind) {
    case wait_get:
      if (!hit) return reply(s, id, Code::not_found);
      return reply_value(s, id, hit->value, hit->flags, hit->expiry_ms, s->protocol >= 2);
    case wait_has_key: return reply(s, id, hit ? Code::ok : Code::not_found);
    case wait_touch:
      // TOUCH of a key only Redis had: it was read through (and installed
      // when it could be); the new TTL goes to both.
      if (!hit) return reply(s, id, Code::not_found);
      w_->touch(key, expiry);
      wrote(key);
      tier_->touch(key, expiry);
      return reply(s, id, Code::ok);
    default: return;
  }
}

void Engine::get_many_redis(Session* s, uint64_t id, const msgpack::object_array& keys) {
  auto many = std::make_shared<ManyState>();
  many->results.resize(keys.size);
  std::vector<uint32_t> misses;
  for (uint32_t i = 0; i < keys.size; ++i) {
    shm::Item it;
    if (w_->get(bytes_of(keys.ptr[i]), &it)) many->results[i].emplace(std::string(it.value), it.flags);
    else misses.push_back(i);
  }
  if (misses.empty()) return reply_many(s, id, many->results);
  // One read-through per missing key, all pipelined on the data connection:
  // one round trip for the lot, and each key joins reads already in flight.
  RedisWait* w = open_wait(s, id, wait_get_many, now_ms() + tier_->config().wait_ms);
  w->many = many;
  const uint64_t wid = w->id;
  auto finish = [this, wid] {
    std::unique_ptr<RedisWait> w = close_wait(wid);
    if (!w) return;
    Session* t = session(w->session);
    if (!t) return;
    reply_many(t, w->req, w->many->results);
    mark_dirty(t);
  };
  many->remaining = misses.size() + 1;  // +1: not finished before every key was asked
  for (uint32_t i : misses) {
    redis::Fetched now;
    const redis::Lookup l =
        tier_->get(bytes_of(keys.ptr[i]), &now, [many, i, finish](const redis::Fetched& f) {
          if (f.kind == redis::Fetched::Kind::hit) many->results[i].emplace(f.value, f.flags);
          if (--many->remaining == 0) finish();
        });
    if (l == redis::Lookup::pending) continue;
    if (l == redis::Lookup::hit) many->results[i].emplace(now.value, now.flags);
    many->remaining--;
  }
  if (--many->remaining == 0) finish();
}

void Engine::reply_many(Session* s, uint64_t id, const ManyResults& r) {
  const size_t start = s->out.bytes.size();
  Packer pk(s->out);
  pk.pack_array(3);
  pk.pack_uint64(id);
  pk.pack_uint8(uint8_t(Code::ok));
  pk.pack_array(uint32_t(r.size()));
  for (const auto& e : r) {
    if (!e) {
      pk.pack_nil();
      continue;
    }
    pk.pack_array(2);
    pack_bytes(pk, e->first);
    pk.pack_uint8(e->second);
    if (get_many_reply_too_large(s, start)) return;
  }
}

// ---------------------------------------------------------------- ADD, INCR/DECR

void Engine::add_redis(Session* s, uint64_t id, std::string_view key, std::string_view value, uint8_t flags,
                       uint64_t expiry) {
  auto ctx = std::make_shared<AtomicCtx>();
  ctx->kind = wait_add;
  ctx->key.assign(key);
  ctx->value.assign(value);
  ctx->flags = flags;
  ctx->expiry = expiry;
  ctx->snap = track(key);
  ctx->tracked = true;
  RedisWait* w = open_wait(s, id, wait_add, now_ms() + tier_->config().wait_ms);
  w->key.assign(key);
  w->ctx = ctx;
  const uint64_t wid = w->id;
  if (tier_->add(key, value, flags, expiry, [this, wid, ctx](const redis::AtomicResult& r) { on_atomic(wid, ctx, r); }))
    return;
  close_wait(wid);
  ctx->tracked = false;
  untrack(key, ctx->snap);
  atomic_down(s, id, *ctx, "Redis is not connected");
}

void Engine::incr_redis(Session* s, uint64_t id, std::string_view key, int64_t delta, bool decr) {
  auto ctx = std::make_shared<AtomicCtx>();
  ctx->kind = wait_incr;
  ctx->key.assign(key);
  ctx->delta = delta;
  ctx->decr = decr;
  ctx->snap = track(key);
  ctx->tracked = true;
  RedisWait* w = open_wait(s, id, wait_incr, now_ms() + tier_->config().wait_ms);
  w->key.assign(key);
  w->ctx = ctx;
  const uint64_t wid = w->id;
  const __int128 d = decr ? -static_cast<__int128>(delta) : static_cast<__int128>(delta);
  if (tier_->incr(key, d, [this, wid, ctx](const redis::AtomicResult& r) { on_atomic(wid, ctx, r); })) return;
  close_wait(wid);
  ctx->tracked = false;
  untrack(key, ctx->snap);
  atomic_down(s, id, *ctx, "Redis is not connected");
}

void Engine::on_atomic(uint64_t wid, const std::shared_ptr<AtomicCtx>& ctx, const redis::AtomicResult& r) {
  bool unchanged = false;
  if (ctx->tracked) ctx->tracked = false, unchanged = untrack(ctx->key, ctx->snap);
  std::unique_ptr<RedisWait> w = close_wait(wid);
  Session* t = w ? session(w->session) : nullptr;
  const uint64_t req = w ? w->req : 0;
  const std::string& key = ctx->key;
  if (ctx->kind == wait_add) {
    if (r.kind == Kind::ok) {
      if (unchanged) install(key, ctx->value, ctx->flags, ctx->expiry);
      if (t) reply(t, req, Code::ok);
    } else if (r.kind == Kind::exists) {
      if (t) reply(t, req, Code::exists);
    } else if (t) {
      atomic_down(t, req, *ctx, r.error);
    }
  } else {
    switch (r.kind) {
      case Kind::ok:
        if (unchanged) install(key, r.value, r.flags, r.expiry_ms);
        if (t) {
          Packer pk(t->out);
          pk.pack_array(3);
          pk.pack_uint64(req);
          pk.pack_uint8(uint8_t(Code::ok));
          pk.pack_int64(r.number);
        }
        break;
      case Kind::not_found:
        if (unchanged) drop(key);  // Redis has no such key: neither may this host
        if (t) reply(t, req, Code::not_found);
        break;
      case Kind::not_integer:
        if (t) error(t, &req, Code::not_integer, "NOT_INTEGER: the value of the key is not a msgpack integer");
        break;
      case Kind::out_of_range:
        if (t)
          error(t, &req, Code::out_of_range,
                std::string("OUT_OF_RANGE: ") + (ctx->decr ? "DECR" : "INCR") +
                    " result outside the signed 64-bit range; value unchanged");
        break;
      default:
        if (t) atomic_down(t, req, *ctx, r.error);
    }
  }
  if (t) mark_dirty(t);
}

void Engine::atomic_down(Session* s, uint64_t id, const AtomicCtx& ctx, const std::string& why) {
  const char* op = ctx.kind == wait_add ? "ADD" : ctx.kind == wait_incr ? (ctx.decr ? "DECR" : "INCR") : "LEASE";
  if (tier_->down_policy() == redis::DownPolicy::error)
    return error(s, &id, Code::unavailable,
                 std::string("UNAVAILABLE: ") + op + " is decided in Redis, which did not decide it (" + why +
                     "); redis_down = error");
  // redis_down = local: this host decides; its result is queued for Redis.
  tier_->note_local_decision();
  switch (ctx.kind) {
    case wait_add: add_local(s, id, ctx.key, ctx.value, ctx.flags, ctx.expiry); break;
    case wait_incr: incr_local(s, id, ctx.key, ctx.delta, ctx.decr); break;
    default: {
      const uint64_t now = now_ms();
      lease_local(s, id, ctx.key, ctx.lease_ms, ctx.wait_deadline > now ? ctx.wait_deadline - now : 0);
    }
  }
}

// ---------------------------------------------------------------- LEASE

void Engine::lease_redis(Session* s, uint64_t id, std::string_view key, uint64_t lease_ms, uint64_t wait_ms) {
  auto ctx = std::make_shared<AtomicCtx>();
  ctx->kind = wait_lease;
  ctx->key.assign(key);
  ctx->token = leases_.next_token();
  ctx->lease_ms = lease_ms;
  ctx->wait_deadline = now_ms() + wait_ms;
  ctx->snap = track(key);
  ctx->tracked = true;
  RedisWait* w = open_wait(s, id, wait_lease, now_ms() + tier_->config().wait_ms);
  w->key.assign(key);
  w->ctx = ctx;
  const uint64_t wid = w->id;
  if (tier_->lease(key, ctx->token, lease_ms, [this, wid, ctx](const redis::AtomicResult& r) { on_lease(wid, ctx, r); }))
    return;
  close_wait(wid);
  ctx->tracked = false;
  untrack(key, ctx->snap);
  atomic_down(s, id, *ctx, "Redis is not connected");
}

void Engine::on_lease(uint64_t wid, const std::shared_ptr<AtomicCtx>& ctx, const redis::AtomicResult& r) {
  const std::string& key = ctx->key;
  RedisWait* pending = find_wait(wid);
  if (r.kind == Kind::held && pending) {
    // Another host holds it: poll Redis (woken by invalidations of the key
    // and by this host's own writes) until the value, the lease or wait_ms.
    Session* t = session(pending->session);
    const uint64_t now = now_ms();
    if (!t || ctx->wait_deadline <= now) {  // wait_ms 0 (or over): no waiting
      const uint64_t req = pending->req;
      close_wait(wid);
      if (ctx->tracked) ctx->tracked = false, untrack(key, ctx->snap);
      if (t) {
        redis_lease_timeouts_++;
        reply(t, req, Code::timeout);
        mark_dirty(t);
      }
      return;
    }
    if (pending->kind == wait_lease) {
      // A waiting LEASE no longer holds the connection's later requests back
      // (as a waiter does without Redis).
      pending->kind = wait_lease_poll;
      lease_polls_[pending->key]++;
      lease_polls_total_++;
      unblock(t, wid);
    }
    set_wait_deadline(pending, ctx->wait_deadline + tier_->config().wait_ms);
    pending->tier_wait = tier_->wait_lease(key, ctx->token, ctx->lease_ms, ctx->wait_deadline,
                                           [this, wid, ctx](const redis::AtomicResult& r2) { on_lease(wid, ctx, r2); });
    return;
  }
  bool unchanged = false;
  if (ctx->tracked) ctx->tracked = false, unchanged = untrack(key, ctx->snap);
  std::unique_ptr<RedisWait> w = close_wait(wid);
  Session* t = w ? session(w->session) : nullptr;
  const uint64_t req = w ? w->req : 0;
  switch (r.kind) {
    case Kind::value:
      if (unchanged) install(key, r.value, r.flags, r.expiry_ms);
      if (t) reply_value(t, req, r.value, r.flags, r.expiry_ms, true);
      break;
    case Kind::granted:
      if (t && leases_.hold(key, t->id, ctx->token, ctx->lease_ms, now_ms())) {
        Packer pk(t->out);
        pk.pack_array(3);
        pk.pack_uint64(req);
        pk.pack_uint8(uint8_t(Code::leased));
        pk.pack_uint64(ctx->token);
        if (hooks_.deadlines_changed) hooks_.deadlines_changed();
        break;
      }
      // Nobody to give it to, or this host decided a lease on the key while
      // Redis was unreachable (its queue is the one to join): give it back.
      tier_->release(key, ctx->token, ignore);
      if (t) {
        const uint64_t now = now_ms();
        lease_local(t, req, key, ctx->lease_ms, ctx->wait_deadline > now ? ctx->wait_deadline - now : 0);
      }
      break;
    case Kind::timeout:
      if (t) {
        redis_lease_timeouts_++;
        reply(t, req, Code::timeout);
      }
      break;
    case Kind::held: break;  // its client was answered already
    default:
      if (t) atomic_down(t, req, *ctx, r.error);
  }
  if (t) mark_dirty(t);
}

// ---------------------------------------------------------------- STATUS

void Engine::redis_status(Packer& pk) {
  const redis::TierStatus st = tier_->status();
  const MetricSpec* table = redis_metric_table();
  for (size_t i = 0; i < kRedisMetricCount; ++i) {
    pack_str(pk, table[i].name);
    pk.pack_uint64(redis::redis_metric_value(st, redis::RedisMetric(i)));
  }
  pack_str(pk, "redis");
  pk.pack_map(13);
  pack_str(pk, "url"), pack_str(pk, st.url);
  pack_str(pk, "prefix"), pack_bytes(pk, tier_->config().prefix);
  pack_str(pk, "state"), pack_str(pk, redis::link_state_name(st.data.state));
  pack_str(pk, "since_unix_ms"), pk.pack_uint64(st.data.since_unix_ms);
  pack_str(pk, "last_error"), pack_str(pk, st.data.last_error);
  pack_str(pk, "invalidation_state"), pack_str(pk, redis::link_state_name(st.invalidation.state));
  pack_str(pk, "invalidation_last_error"), pack_str(pk, st.invalidation.last_error);
  pack_str(pk, "coherent"), st.coherent ? pk.pack_true() : pk.pack_false();
  pack_str(pk, "degraded"), st.degraded ? pk.pack_true() : pk.pack_false();
  pack_str(pk, "redis_down"), pack_str(pk, redis::down_policy_name(tier_->down_policy()));
  pack_str(pk, "queue_in_flight"), pk.pack_uint64(st.queue.in_flight);
  pack_str(pk, "last_write_refusal"), pack_str(pk, st.queue.last_refusal);  // write_behind.h: Refusals
  pack_str(pk, "last_write_refusal_unix_ms"), pk.pack_uint64(st.queue.last_refusal_unix_ms);
}

}  // namespace nearcache::daemon
