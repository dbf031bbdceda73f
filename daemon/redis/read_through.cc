// daemon/redis/read_through.cc — see read_through.h.
#include "redis/read_through.h"

#include <hiredis/hiredis.h>

#include <algorithm>

#include <spdlog/spdlog.h>

#include "redis/util.h"
#include "redis/value.h"

namespace nearcache::redis {

ReadThrough::ReadThrough(Link* link, WriteBehind* queue, const Config& cfg) : link_(link), queue_(queue), cfg_(cfg) {}

Lookup ReadThrough::get(std::string_view key, Fetched* now, FetchFn done) {
  PendingValue pv;
  switch (queue_->pending(key, &pv)) {
    case Pending::value:
      st_.queue_hits_total++;
      now->kind = Fetched::Kind::hit;
      now->value.assign(pv.value);
      now->flags = pv.flags;
      now->expiry_ms = pv.expiry_ms;
      now->queued = true;
      // The local copy was evicted or flushed: put it back, unless it lives in Redis only.
      now->installable = pv.value.size() <= cfg_.local_max_bytes;
      if (!now->installable) st_.large_total++;
      if (now->installable && install_) install_(key, *now);
      return Lookup::hit;
    case Pending::deleted:
      st_.misses_total++;
      now->kind = Fetched::Kind::miss;
      return Lookup::miss;
    default: break;  // touched: Redis has the value; after() sends the TOUCH first
  }
  if (!link_->ready()) {
    st_.unavailable_total++;
    now->kind = Fetched::Kind::unavailable;
    now->error = "Redis is not connected";
    return Lookup::unavailable;
  }
  const std::string k(key);
  auto it = flights_.find(k);
  if (it != flights_.end()) {
    st_.joined_total++;
    it->second->waiters.push_back(std::move(done));
    return Lookup::pending;
  }
  auto f = std::make_shared<Flight>();
  f->key = k;
  f->waiters.push_back(std::move(done));
  flights_[k] = f;
  // The link is ready, so after() either sends now or parks behind a CLEAR;
  // it never calls back with false before returning.
  queue_->after(key, [this, f](bool ordered) {
    if (!ordered) {
      Fetched r;
      r.kind = Fetched::Kind::unavailable;
      r.error = "Redis connection lost before the read could be sent";
      return finish(f, std::move(r));
    }
    send(f);
  });
  return Lookup::pending;
}

void ReadThrough::send(const std::shared_ptr<Flight>& f) {
  f->coherent = coherent_ ? coherent_() : false;
  const std::string rk = cfg_.prefix + f->key;
  const std::string max = std::to_string(relay_max_stored(cfg_));
  st_.gets_total++;
  const bool sent = queue_->scripts()->eval(Script::get, {rk}, {max}, [this, f](const Reply& r) {
    if (f->done) return;
    Fetched x;
    const std::string_view kind = r.is_error() ? std::string_view() : str_at(r.r, 0);
    if (kind == "missing") {
      x.kind = Fetched::Kind::miss;
      x.absent = true;
      return finish(f, std::move(x));
    }
    std::string_view v;
    const bool foreign = kind == "value" && decode_value(str_at(r.r, 1), &v, &x.flags) == Stored::foreign;
    if (kind == "large" || v.size() > cfg_.relay_max_bytes) {
      const uint64_t n = kind == "large" ? uint64_t(int_at(r.r, 1)) : v.size();
      st_.oversize_total++;
      uint64_t skipped = 0;
      if (oversize_log_.allow(&skipped))
        spdlog::warn("redis: '{}' in Redis is {} bytes, over the {} this daemon relays ({}): answered as "
                     "a miss, not read ({} such value(s) since the last report)",
                     printable(f->key), n, cfg_.relay_max_bytes,
                     cfg_.relay_max_bytes > cfg_.local_max_bytes ? "redis_relay_max_bytes" : "value_limit",
                     skipped + 1);
      x.kind = Fetched::Kind::miss;
      return finish(f, std::move(x));
    }
    if (kind != "value") {
      x.kind = Fetched::Kind::unavailable;
      x.error = r.is_error() ? r.error() : "unexpected reply to the read-through";
      return finish(f, std::move(x));
    }
    if (foreign) {
      st_.foreign_total++;
      uint64_t skipped = 0;
      if (foreign_log_.allow(&skipped))
        spdlog::info("redis: '{}' in Redis is not a value nearcache wrote (not msgpack, no envelope): answered "
                     "with flag 0x80 (foreign), which the Django backend reads as a miss ({} such read(s) since "
                     "the last report)",
                     printable(f->key), skipped + 1);
    }
    x.kind = Fetched::Kind::hit;
    x.value.assign(v);
    const long long pttl = int_at(r.r, 2);
    const uint64_t now = mono_ms();
    uint64_t expiry = pttl > 0 ? now + uint64_t(pttl) : 0;
    if (cfg_.local_ttl_max_ms && (expiry == 0 || expiry > now + cfg_.local_ttl_max_ms))
      expiry = now + cfg_.local_ttl_max_ms;
    x.expiry_ms = expiry;
    finish(f, std::move(x));
  });
  if (!sent) {
    Fetched x;
    x.kind = Fetched::Kind::unavailable;
    x.error = "Redis is not connected";
    finish(f, std::move(x));
  }
}

void ReadThrough::finish(const std::shared_ptr<Flight>& f, Fetched r) {
  if (f->done) return;
  f->done = true;
  auto it = flights_.find(f->key);
  if (it != flights_.end() && it->second == f) flights_.erase(it);
  switch (r.kind) {
    case Fetched::Kind::hit:
      st_.hits_total++;
      r.installable = !f->stale && f->coherent && (!coherent_ || coherent_());
      if (f->stale) st_.stale_total++;
      if (r.value.size() > cfg_.local_max_bytes) {  // lives in Redis only: answered, never installed
        r.installable = false;
        st_.large_total++;
      }
      if (r.installable && install_) install_(f->key, r);
      break;
    case Fetched::Kind::miss:
      st_.misses_total++;
      if (!r.absent || !cfg_.negative_ttl_ms) break;
      // The same guard as a value: nothing wrote or invalidated the key
      // since the read was sent, and invalidations were flowing throughout.
      r.installable = !f->stale && f->coherent && (!coherent_ || coherent_());
      if (f->stale) st_.stale_total++;
      if (r.installable && install_) {
        const uint64_t ttl = cfg_.local_ttl_max_ms ? std::min(cfg_.negative_ttl_ms, cfg_.local_ttl_max_ms)
                                                   : cfg_.negative_ttl_ms;
        r.expiry_ms = mono_ms() + ttl;
        st_.negatives_total++;
        install_(f->key, r);
      }
      break;
    case Fetched::Kind::unavailable: st_.errors_total++; break;
  }
  auto waiters = std::move(f->waiters);
  for (auto& w : waiters) w(r);
}

void ReadThrough::invalidate(std::string_view key) {
  auto it = flights_.find(std::string(key));
  if (it == flights_.end()) return;
  it->second->stale = true;
  flights_.erase(it);
}

void ReadThrough::invalidate_all() {
  for (auto& [k, f] : flights_) f->stale = true;
  flights_.clear();
}

ReadStats ReadThrough::stats() const {
  ReadStats s = st_;
  s.in_flight = flights_.size();
  return s;
}

}  // namespace nearcache::redis
