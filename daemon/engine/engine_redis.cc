// daemon/engine/engine_redis.cc — what the Engine's ops do with the Redis tier
// (daemon/redis/README.md has the map of hooks), seen as redis::TierApi:
//
//   - local misses (GET, GET_MANY, HAS_KEY, TOUCH) read through Redis;
//   - local writes are queued for Redis after they are applied (queue_store);
//   - ADD, REPLACE, INCR/DECR, TTL and LEASE are decided in Redis (decide_in_redis), then
//     applied here (on_atomic, on_lease);
//   - the tier's table hooks (install, drop, drop_all) act on the table;
//   - no client waits for Redis longer than redis_wait_ms: at that deadline a
//     read is a miss and an atomic operation follows redis_down.
//
// The waits and the write tracking (a result is installed only if nothing
// wrote the key on this host since the operation was sent) are RedisWaits
// (redis_waits.h); this file decides what each answer means.
#include <spdlog/spdlog.h>

#include "engine/engine.h"
#include "protocol/codec.h"
#include "protocol/reply.h"
#include "redis/metrics.h"
#include "redis/slots.h"
#include "writer.h"

namespace nearcache::daemon {

namespace {

using Kind = redis::AtomicResult::Kind;

void ignore(const redis::AtomicResult&) {}

}  // namespace

// ---------------------------------------------------------------- deadlines, closed sessions

void Engine::expire_waits(uint64_t now) {
  while (std::unique_ptr<RedisWait> w = waits_.pop_due(now)) {
    Session* t = session(w->session);
    if (!t) continue;
    const std::string why = "Redis did not answer within redis_wait_ms (" + std::to_string(tier_->config().wait_ms) + " ms)";
    switch (w->kind) {
      case WaitKind::get:
      case WaitKind::has_key:
      case WaitKind::touch: reply::status(t->out, w->req, Code::not_found); break;
      case WaitKind::get_many: reply_many(t, w->req, w->many->results); break;
      case WaitKind::add:
      case WaitKind::replace:
      case WaitKind::incr:
      case WaitKind::ttl:
      case WaitKind::lock:
      case WaitKind::lease: atomic_down(t, w->req, *w->ctx, why); break;
      case WaitKind::lease_poll: lease_timeout(t, w->req); break;
    }
    mark_dirty(t);
  }
}

void Engine::cancel_waits(uint64_t sid) {
  for (const std::unique_ptr<RedisWait>& w : waits_.close_session(sid)) {
    // Other operations still complete in Redis; their callbacks apply them here.
    if (sid != 0) continue;
    if (Session* t = session(w->session)) {
      const uint64_t req = w->req;
      error(t, &req, Code::shutting_down, "the daemon is stopping");
      mark_dirty(t);
    }
  }
}

// ---------------------------------------------------------------- the tier's hooks

void Engine::set_tier(redis::TierApi* tier) {
  tier_ = tier;
  waits_.set_tier(tier);
  // A lease decided here is conditional on the last counter snapshot (Lease fills).
  if (tier) leases_.set_fill_source([this](std::string_view key) { return tier_->fill_base(key); });
  else leases_.set_fill_source(nullptr);
  // An adopted table starts suspended until its repair (shm/adopt.cc).
  suspended_ = tier && (w_->flags() & shm::kFlagSuspended) != 0;
}

redis::TableHooks Engine::table_hooks() {
  redis::TableHooks h;
  h.drop = [this](std::string_view key) { drop(key); };
  h.drop_all = [this](const char* why) { drop_all(why); };
  h.install = [this](std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry) {
    install(key, value, flags, expiry);
  };
  h.install_negative = [this](std::string_view key, uint64_t expiry) { install_negative(key, expiry); };
  h.synced = [this](std::string_view key) { w_->mark_synced(key); };
  h.acked = [this](std::string_view key, uint64_t item_id) { w_->mark_synced(key, item_id); };
  h.fill_refused = [this](std::string_view key, uint64_t item_id) { fill_refused(key, item_id); };
  h.drop_slots = [this](const std::vector<bool>& slots) { drop_slots(slots); };
  h.suspend = [this](bool on) { suspend(on); };
  return h;
}

void Engine::drop_slots(const std::vector<bool>& slots) {
  // The keys first (for_each must not see the table change), then one delete
  // each: synchronous, like drop_all, so no reader serves a dropped entry
  // once the suspension is lifted.
  const uint64_t t0 = mono_us();
  const std::string& prefix = tier_->config().prefix;
  std::vector<std::string> keys;
  std::string rk;
  w_->for_each(
      [&](const shm::Item& it) {
        rk.assign(prefix).append(it.key);
        if (slots[redis::key_slot(rk)]) keys.emplace_back(it.key);
      },
      true);  // negative entries of those slots may be stale as well
  for (const std::string& k : keys) w_->del(k);
  waits_.wrote_all();
  spdlog::info("redis: repair dropped {} entries of the slots written while invalidations were down ({:.1f} ms)",
               keys.size(), double(mono_us() - t0) / 1000.0);
}

void Engine::suspend(bool on) {
  if (on == suspended_) return;
  suspended_ = on;
  // Readers: the segment's `suspended` flag (they serve nothing and ask the
  // daemon). The daemon's own lookups skip the table while suspended_
  // (op_get, get_many_redis, op_has_key, op_lease).
  w_->set_suspended(on);
  spdlog::info("redis: this host's table is {}", on ? "suspended (kept, not served)" : "served again");
}

bool Engine::install(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry) {
  if (cfg_.max_ttl_ms) {
    const uint64_t ceiling = shm::expiry_from_ttl(int64_t(std::min<uint64_t>(cfg_.max_ttl_ms, INT64_MAX)), now_ms());
    if (expiry == 0 || expiry > ceiling) expiry = ceiling;
  }
  if (w_->set(key, value, flags, expiry) != shm::Status::ok) {
    // Over this host's limits (a value that lives in Redis only): not kept
    // here, and neither is what the table held for the key (a negative entry).
    w_->del(key);
    return false;
  }
  waits_.wrote(key);
  after_store(key, value, flags, expiry);
  return true;
}

void Engine::install_decided(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry) {
  // Decided in Redis (ADD's SET NX, INCR's result, a LEASE's value): Redis
  // has this value, so a warm restart may keep it (shm kItemSynced).
  if (install(key, value, flags, expiry)) w_->mark_synced(key);
}

void Engine::install_negative(std::string_view key, uint64_t expiry) {
  // Bounded: a scan of absent keys must not push values out of the table.
  const uint64_t max = tier_ ? tier_->config().negative_max : 0;
  if (max && w_->stats().negatives >= max) {
    negative_skipped_++;
    return;
  }
  // Not a write (waits_.wrote): an ADD or INCR in flight was sent before this
  // read and decides the key; its result replaces the negative entry.
  w_->set_negative(key, expiry);
}

bool Engine::negative_hit(std::string_view key) {
  if (!tier_ || suspended_ || !w_->negative(key)) return false;
  negative_hits_++;
  return true;
}

void Engine::drop(std::string_view key) {
  w_->del(key);
  waits_.wrote(key);
}

void Engine::drop_all(const char* why) {
  // Every entry may be stale: the table's epoch moves on (O(1)), so that no
  // reader serves one from shared memory afterwards; the logs reclaim the
  // old items lazily.
  const uint64_t t0 = mono_us();
  const uint64_t removed = w_->drop_all();
  waits_.wrote_all();
  finish_clears();  // client CLEARs pending behind it are complete too
  finish_scans();   // and SCANs: the entries they had not seen are gone
  spdlog::info("redis: {}: dropped this host's table ({} entries, {:.3f} ms)", why, removed,
               double(mono_us() - t0) / 1000.0);
}

void Engine::fill_refused(std::string_view key, uint64_t item_id) {
  // Another host wrote the key's slot since the lease: the value this host
  // read from the database may be older than that write. Not served here
  // either (a newer local write of the key stays); the next read reads through.
  if (!w_->holds(key, item_id)) return;  // the fill's write, wherever eviction moved it
  w_->del(key);
  waits_.wrote(key);
}

void Engine::queue_store(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry,
                         const int64_t* fill) {
  if (!tier_) return;
  if (expiry != 0 && expiry <= now_ms()) {  // ttl <= 0: the key is gone
    tier_->del(key);
    return;
  }
  // A write the queue had no room for never reaches Redis: this host must not
  // go on serving it either (the queue logged and counted the drop).
  // The item's id comes back with Redis's acknowledgement (TableHooks::acked).
  const uint64_t item = w_->item_id(key);
  const redis::Enqueued r =
      fill ? tier_->fill(key, value, flags, expiry, item, *fill) : tier_->set(key, value, flags, expiry, item);
  if (r == redis::Enqueued::dropped || r == redis::Enqueued::refused) w_->del(key);
}

void Engine::wake_pollers(std::string_view key) {
  if (tier_ && waits_.polled(key)) tier_->wake_lease_waiters(key);
}

// ---------------------------------------------------------------- read-through

void Engine::redis_read(Session* s, uint64_t id, WaitKind kind, std::string_view key, uint64_t expiry) {
  RedisWait* w = waits_.open(s, id, kind, now_ms() + tier_->config().wait_ms);
  w->key.assign(key);
  w->expiry = expiry;
  const uint64_t wid = w->id;
  redis::Fetched now;
  const redis::Lookup l = tier_->get(key, &now, [this, wid](const redis::Fetched& f) {
    std::unique_ptr<RedisWait> w = waits_.close(wid);
    if (!w) return;  // answered at its deadline, or the client left
    Session* t = session(w->session);
    if (!t) return;
    read_done(t, w->req, w->kind, w->key, w->expiry, f.kind == redis::Fetched::Kind::hit ? &f : nullptr);
    mark_dirty(t);
  });
  if (l == redis::Lookup::pending) return;
  waits_.close(wid);
  read_done(s, id, kind, key, expiry, l == redis::Lookup::hit ? &now : nullptr);
}

void Engine::read_done(Session* s, uint64_t id, WaitKind kind, std::string_view key, uint64_t expiry,
                       const redis::Fetched* hit) {
  switch (kind) {
    case WaitKind::get:
      if (!hit) return reply::status(s->out, id, Code::not_found);
      return reply_value(s, id, hit->value, hit->flags, hit->expiry_ms, s->protocol >= 2);
    case WaitKind::has_key: return reply::status(s->out, id, hit ? Code::ok : Code::not_found);
    case WaitKind::touch:
      // TOUCH of a key only Redis had: it was read through (and installed
      // when it could be); the new TTL goes to both.
      if (!hit) return reply::status(s->out, id, Code::not_found);
      w_->touch(key, expiry);
      waits_.wrote(key);
      tier_->touch(key, expiry);
      return reply::ok(s->out, id);
    default: return;
  }
}

void Engine::get_many_redis(Session* s, uint64_t id, const msgpack::object_array& keys) {
  auto many = std::make_shared<ManyState>();
  many->results.resize(keys.size);
  std::vector<uint32_t> misses;
  for (uint32_t i = 0; i < keys.size; ++i) {
    shm::Item it;
    if (!suspended_ && table_get(bytes_of(keys.ptr[i]), &it)) many->results[i].emplace(std::string(it.value), it.flags);
    else if (!negative_hit(bytes_of(keys.ptr[i]))) misses.push_back(i);
  }
  if (misses.empty()) return reply_many(s, id, many->results);
  // One read-through per missing key, all pipelined on the data connection:
  // one round trip for the lot, and each key joins reads already in flight.
  RedisWait* w = waits_.open(s, id, WaitKind::get_many, now_ms() + tier_->config().wait_ms);
  w->many = many;
  const uint64_t wid = w->id;
  auto finish = [this, wid] {
    std::unique_ptr<RedisWait> w = waits_.close(wid);
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
  const bool fits = reply::entries(s->out, id, uint32_t(r.size()), cfg_.max_output_bytes,
                                   [&r](uint32_t i, std::string_view* value, uint8_t* flags) {
                                     if (!r[i]) return false;
                                     *value = r[i]->first, *flags = r[i]->second;
                                     return true;
                                   });
  if (!fits) get_many_too_large(s);
}

// ---------------------------------------------------------------- ADD, INCR/DECR, LEASE: decided in Redis

void Engine::decide_in_redis(Session* s, uint64_t id, const std::shared_ptr<Decided>& d) {
  const auto send = [this, &d](redis::AtomicFn cb) {
    switch (d->kind) {
      case WaitKind::add: return tier_->add(d->key, d->value, d->flags, d->expiry, std::move(cb));
      case WaitKind::replace: return tier_->replace(d->key, d->value, d->flags, d->expiry, std::move(cb));
      case WaitKind::ttl: return tier_->pttl(d->key, std::move(cb));
      case WaitKind::lock:
        return tier_->lock(d->lock_op, d->key, d->value, d->lease_ms, cfg_.max_lock_ms, std::move(cb));
      case WaitKind::incr:
        return tier_->incr(d->key, d->decr ? -static_cast<__int128>(d->delta) : static_cast<__int128>(d->delta),
                           std::move(cb));
      default: return tier_->lease(d->key, d->token, d->lease_ms, std::move(cb));
    }
  };
  const auto answer = [this](uint64_t wid, const std::shared_ptr<Decided>& c, const redis::AtomicResult& r) {
    if (c->kind == WaitKind::lease) on_lease(wid, c, r);
    else on_atomic(wid, c, r);
  };
  if (!waits_.start(s, id, d, now_ms() + tier_->config().wait_ms, send, answer))
    atomic_down(s, id, *d, "Redis is not connected");
}

void Engine::on_atomic(uint64_t wid, const std::shared_ptr<Decided>& ctx, const redis::AtomicResult& r) {
  const bool unchanged = waits_.settle(*ctx);
  std::unique_ptr<RedisWait> w = waits_.close(wid);
  Session* t = w ? session(w->session) : nullptr;
  const uint64_t req = w ? w->req : 0;
  const std::string& key = ctx->key;
  if (ctx->kind == WaitKind::lock) {
    if (t) lock_answered(t, req, *ctx, r);
  } else if (ctx->kind == WaitKind::ttl) {
    if (t && r.kind == Kind::ok) {
      if (r.number == -2) reply::status(t->out, req, Code::not_found);
      else reply::remaining(t->out, req, r.number >= 0, uint64_t(std::max<int64_t>(r.number, 0)));
    } else if (t) {
      atomic_down(t, req, *ctx, r.error);
    }
  } else if (ctx->kind == WaitKind::replace || ctx->kind == WaitKind::add) {
    // One answer refuses each: ADD when Redis has the key, REPLACE when it has none.
    const bool add = ctx->kind == WaitKind::add;
    if (r.kind == Kind::ok) {
      if (unchanged && add) install_decided(key, ctx->value, ctx->flags, ctx->expiry);
      else if (unchanged) install(key, ctx->value, ctx->flags, ctx->expiry);
      if (t) reply::ok(t->out, req);
    } else if (r.kind == (add ? Kind::exists : Kind::not_found)) {
      // REPLACE: Redis has no such key, neither may this host; ADD: Redis has
      // it, so a negative entry here is stale.
      if (unchanged && (!add || w_->negative(key))) drop(key);
      if (t) reply::status(t->out, req, add ? Code::exists : Code::not_found);
    } else if (t) {
      atomic_down(t, req, *ctx, r.error);
    }
  } else {
    switch (r.kind) {
      case Kind::ok:
        if (unchanged) install_decided(key, r.value, r.flags, r.expiry_ms);
        if (t) reply::number(t->out, req, r.number);
        break;
      case Kind::not_found:
        if (unchanged) drop(key);  // Redis has no such key: neither may this host
        if (t) reply::status(t->out, req, Code::not_found);
        break;
      case Kind::not_integer:
        if (t) incr_error(t, req, Code::not_integer, ctx->decr);
        break;
      case Kind::out_of_range:
        if (t) incr_error(t, req, Code::out_of_range, ctx->decr);
        break;
      default:
        if (t) atomic_down(t, req, *ctx, r.error);
    }
  }
  if (t) mark_dirty(t);
}

void Engine::lock_answered(Session* s, uint64_t id, const Decided& d, const redis::AtomicResult& r) {
  switch (r.kind) {
    case Kind::ok:
      if (d.lock_op != redis::LockOp::query) return reply::ok(s->out, id);
      return reply::lock_holder(s->out, id, r.value, uint64_t(std::max<int64_t>(r.number, 0)));
    case Kind::exists: return reply::status(s->out, id, Code::exists);
    case Kind::not_found: return reply::status(s->out, id, Code::not_found);
    default: atomic_down(s, id, d, r.error);
  }
}

void Engine::atomic_down(Session* s, uint64_t id, const Decided& ctx, const std::string& why) {
  if (ctx.kind == WaitKind::lock)  // never granted, released or extended by this host alone
    return error(s, &id, Code::unavailable,
                 "locks are decided in Redis, which did not decide this one (" + why + "), whatever redis_down says");
  const char* op = ctx.kind == WaitKind::add       ? "ADD"
                   : ctx.kind == WaitKind::replace ? "REPLACE"
                   : ctx.kind == WaitKind::ttl     ? "TTL"
                   : ctx.kind == WaitKind::incr    ? (ctx.decr ? "DECR" : "INCR")
                                                   : "LEASE";
  if (tier_->down_policy() == redis::DownPolicy::error)
    return error(s, &id, Code::unavailable,
                 std::string(op) + " is decided in Redis, which did not decide it (" + why + "); redis_down = error");
  // redis_down = local: this host decides; its result is queued for Redis.
  tier_->note_local_decision();
  switch (ctx.kind) {
    case WaitKind::add: add_local(s, id, ctx.key, ctx.value, ctx.flags, ctx.expiry); break;
    case WaitKind::replace: replace_local(s, id, ctx.key, ctx.value, ctx.flags, ctx.expiry); break;
    case WaitKind::ttl: ttl_local(s, id, ctx.key); break;  // bounded by redis_local_ttl_max_ms
    case WaitKind::incr: incr_local(s, id, ctx.key, ctx.delta, ctx.decr); break;
    default: lease_local(s, id, ctx.key, ctx.lease_ms, ctx.wait_left(now_ms()));
  }
}

// ---------------------------------------------------------------- LEASE

void Engine::on_lease(uint64_t wid, const std::shared_ptr<Decided>& ctx, const redis::AtomicResult& r) {
  const std::string& key = ctx->key;
  RedisWait* pending = waits_.find(wid);
  if (r.kind == Kind::held && pending) {
    // Another host holds it: poll Redis (woken by invalidations of the key
    // and by this host's own writes) until the value, the lease or wait_ms.
    Session* t = session(pending->session);
    const uint64_t now = now_ms();
    if (!t || ctx->wait_deadline <= now) {  // wait_ms 0 (or over): no waiting
      const uint64_t req = pending->req;
      waits_.close(wid);
      waits_.settle(*ctx);
      if (t) {
        lease_timeout(t, req);
        mark_dirty(t);
      }
      return;
    }
    // A waiting LEASE no longer holds the connection's later requests back
    // (as a waiter does without Redis).
    waits_.start_polling(pending);
    waits_.set_deadline(pending, ctx->wait_deadline + tier_->config().wait_ms);
    pending->tier_wait = tier_->wait_lease(key, ctx->token, ctx->lease_ms, ctx->wait_deadline,
                                           [this, wid, ctx](const redis::AtomicResult& r2) { on_lease(wid, ctx, r2); });
    return;
  }
  const bool unchanged = waits_.settle(*ctx);
  std::unique_ptr<RedisWait> w = waits_.close(wid);
  Session* t = w ? session(w->session) : nullptr;
  const uint64_t req = w ? w->req : 0;
  switch (r.kind) {
    case Kind::value:
      if (unchanged) install_decided(key, r.value, r.flags, r.expiry_ms);
      if (t) reply_value(t, req, r.value, r.flags, r.expiry_ms, true);
      break;
    case Kind::granted:
      if (t && leases_.hold(key, t->id, ctx->token, ctx->lease_ms, now_ms(), r.fill_base)) {
        reply::leased(t->out, req, ctx->token);
        if (hooks_.deadlines_changed) hooks_.deadlines_changed();
        break;
      }
      // Nobody to give it to, or this host decided a lease on the key while
      // Redis was unreachable (its queue is the one to join): give it back.
      tier_->release(key, ctx->token, ignore);
      if (t) lease_local(t, req, key, ctx->lease_ms, ctx->wait_left(now_ms()));
      break;
    case Kind::timeout:
      if (t) lease_timeout(t, req);
      break;
    case Kind::held: break;  // its client was answered already
    default:
      if (t) atomic_down(t, req, *ctx, r.error);
  }
  if (t) mark_dirty(t);
}

void Engine::lease_timeout(Session* s, uint64_t id) {
  redis_lease_timeouts_++;
  reply::status(s->out, id, Code::timeout);
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
  pk.pack_map(18);
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
  pack_str(pk, "tls"), pack_str(pk, !st.data.tls ? "off" : st.data.tls_verify ? "on" : "on, not verified");
  const std::string& verr =
      st.data.tls_verify_error.empty() ? st.invalidation.tls_verify_error : st.data.tls_verify_error;
  pack_str(pk, "tls_verify_error"), pack_str(pk, verr);
  pack_str(pk, "sentinel_master"), pack_str(pk, st.sentinel.master_name);  // "" without Sentinel
  pack_str(pk, "sentinel"), pack_str(pk, st.sentinel.last_sentinel);
  pack_str(pk, "master"), pack_str(pk, st.master);
}

}  // namespace nearcache::daemon
