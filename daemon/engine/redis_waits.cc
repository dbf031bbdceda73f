// daemon/engine/redis_waits.cc — the registry of requests waiting for Redis,
// write tracking, and the start of Redis-decided operations (redis_waits.h).
#include "engine/redis_waits.h"

namespace nearcache::daemon {

// ---------------------------------------------------------------- the registry

RedisWait* RedisWaits::open(Session* s, uint64_t req, WaitKind kind, uint64_t deadline) {
  auto w = std::make_unique<RedisWait>();
  w->id = next_id_++;
  w->session = s->id;
  w->req = req;
  w->kind = kind;
  w->deadline = deadline;
  RedisWait* p = w.get();
  waits_.emplace(p->id, std::move(w));
  deadlines_.emplace(deadline, p->id);
  s->outstanding++;
  // Operations whose effect later requests must see hold the connection's
  // later requests back (reads need not: a read that waits on Redis comes
  // first in the connection's order, and a later write cannot change what it
  // answers for the key it asked).
  if (kind == WaitKind::touch || kind == WaitKind::add || kind == WaitKind::incr || kind == WaitKind::lease ||
      kind == WaitKind::replace || kind == WaitKind::ttl || kind == WaitKind::lock)
    s->blocked = p->id;
  if (hooks_.deadlines_changed) hooks_.deadlines_changed();
  return p;
}

RedisWait* RedisWaits::find(uint64_t wid) {
  auto it = waits_.find(wid);
  return it == waits_.end() ? nullptr : it->second.get();
}

std::unique_ptr<RedisWait> RedisWaits::close(uint64_t wid) {
  auto it = waits_.find(wid);
  if (it == waits_.end()) return nullptr;
  std::unique_ptr<RedisWait> w = std::move(it->second);
  waits_.erase(it);
  deadlines_.erase({w->deadline, w->id});
  if (Session* t = hooks_.session(w->session)) {
    if (t->outstanding) t->outstanding--;
    unblock(t, w->id);
  }
  if (w->kind == WaitKind::lease_poll) {
    auto p = polls_.find(w->key);
    if (p != polls_.end() && --p->second == 0) polls_.erase(p);
    polls_total_--;
  }
  return w;
}

void RedisWaits::unblock(Session* s, uint64_t wid) {
  if (s->blocked != wid) return;
  s->blocked = 0;
  if (hooks_.resume) hooks_.resume(s);
}

void RedisWaits::set_deadline(RedisWait* w, uint64_t deadline) {
  deadlines_.erase({w->deadline, w->id});
  w->deadline = deadline;
  deadlines_.emplace(deadline, w->id);
  if (hooks_.deadlines_changed) hooks_.deadlines_changed();
}

void RedisWaits::start_polling(RedisWait* w) {
  if (w->kind != WaitKind::lease) return;
  w->kind = WaitKind::lease_poll;
  polls_[w->key]++;
  polls_total_++;
  if (Session* t = hooks_.session(w->session)) unblock(t, w->id);
}

// A lease poll closed before Redis answered it: the tier stops polling.
void RedisWaits::retire_poll(RedisWait& w) {
  if (w.kind != WaitKind::lease_poll) return;
  if (tier_) tier_->cancel_wait(w.tier_wait);
  settle(*w.ctx);
}

std::unique_ptr<RedisWait> RedisWaits::pop_due(uint64_t now) {
  while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
    std::unique_ptr<RedisWait> w = close(deadlines_.begin()->second);
    if (!w) {  // cannot happen: both are updated together
      deadlines_.erase(deadlines_.begin());
      continue;
    }
    retire_poll(*w);
    return w;
  }
  return nullptr;
}

std::vector<std::unique_ptr<RedisWait>> RedisWaits::close_session(uint64_t sid) {
  std::vector<uint64_t> ids;
  for (const auto& [wid, w] : waits_)
    if (sid == 0 || w->session == sid) ids.push_back(wid);
  std::vector<std::unique_ptr<RedisWait>> out;
  for (uint64_t wid : ids) {
    out.push_back(close(wid));
    retire_poll(*out.back());
  }
  return out;
}

// ---------------------------------------------------------------- write tracking

WriteSnap RedisWaits::track(std::string_view key) {
  Tracked& t = tracked_[std::string(key)];
  t.refs++;
  return {t.writes, write_epoch_};
}

bool RedisWaits::untrack(std::string_view key, const WriteSnap& at) {
  auto it = tracked_.find(std::string(key));
  if (it == tracked_.end()) return false;
  const bool same = it->second.writes == at.writes && write_epoch_ == at.epoch;
  if (--it->second.refs == 0) tracked_.erase(it);
  return same;
}

bool RedisWaits::settle(Decided& d) {
  if (!d.tracked) return false;
  d.tracked = false;
  return untrack(d.key, d.snap);
}

void RedisWaits::wrote_tracked(std::string_view key) {
  auto it = tracked_.find(std::string(key));
  if (it != tracked_.end()) it->second.writes++;
}

// ---------------------------------------------------------------- an operation Redis decides

bool RedisWaits::start(Session* s, uint64_t req, const std::shared_ptr<Decided>& d, uint64_t deadline,
                       const Send& send, Answer answer) {
  d->snap = track(d->key);
  d->tracked = true;
  RedisWait* w = open(s, req, d->kind, deadline);
  w->key = d->key;
  w->ctx = d;
  const uint64_t wid = w->id;
  if (send([wid, d, answer = std::move(answer)](const redis::AtomicResult& r) { answer(wid, d, r); })) return true;
  close(wid);
  settle(*d);
  return false;
}

}  // namespace nearcache::daemon
