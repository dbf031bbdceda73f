// daemon/engine/leases.cc — see leases.h.
#include "engine/leases.h"

#include <sys/random.h>

#include <algorithm>

namespace nearcache::daemon {

namespace {
uint64_t add_sat(uint64_t a, uint64_t b) { return b > UINT64_MAX - a ? UINT64_MAX : a + b; }
}  // namespace

Leases::Leases() {
  // Tokens start at a random point so a token from before a restart is not
  // mistaken for a current one.
  uint32_t r = 0;
  if (getrandom(&r, sizeof r, 0) != sizeof r) r = 1;
  next_id_ = (uint64_t(r) << 24) + 1;
}

void Leases::grant(Map::iterator it, uint64_t conn, uint64_t lease_ms, uint64_t now) {
  record(it, next_id_++, conn, lease_ms, now, fill_source_ ? fill_source_(it->first) : 0);
}

void Leases::record(Map::iterator it, uint64_t token, uint64_t conn, uint64_t lease_ms, uint64_t now,
                    int64_t fill) {
  Lease& l = it->second;
  l.fill = fill;
  l.token = token;
  l.holder = conn;
  l.expires = add_sat(now, std::max<uint64_t>(lease_ms, 1));
  deadlines_.emplace(l.expires, l.token);
  deadline_keys_.emplace(l.token, it->first);
  by_conn_[conn][it->first]++;
  granted_total_++;
}

void Leases::unref(uint64_t conn, const std::string& key) {
  auto c = by_conn_.find(conn);
  if (c == by_conn_.end()) return;
  auto k = c->second.find(key);
  if (k != c->second.end() && --k->second == 0) c->second.erase(k);
  if (c->second.empty()) by_conn_.erase(c);
}

void Leases::remove_waiter_deadline(const Waiter& w) {
  deadlines_.erase({w.deadline, w.seq});
  deadline_keys_.erase(w.seq);
}

uint64_t Leases::acquire(std::string_view key, uint64_t conn, uint64_t req, uint64_t lease_ms, uint64_t wait_ms,
                         uint64_t now, bool* timed_out) {
  *timed_out = false;
  auto [it, fresh] = leases_.try_emplace(std::string(key));
  if (fresh) {
    grant(it, conn, lease_ms, now);
    return it->second.token;
  }
  if (wait_ms == 0) {
    *timed_out = true;
    timeouts_total_++;
    return 0;
  }
  Waiter w{conn, req, lease_ms, add_sat(now, wait_ms), next_id_++};
  it->second.waiters.push_back(w);
  deadlines_.emplace(w.deadline, w.seq);
  deadline_keys_.emplace(w.seq, it->first);
  by_conn_[conn][it->first]++;
  waiting_++;
  return 0;
}

bool Leases::take_waiters(std::string_view key, std::vector<Waiter>* out, uint64_t* redis_token) {
  if (redis_token) *redis_token = 0;
  auto it = leases_.find(std::string(key));
  if (it == leases_.end()) return false;
  Lease& l = it->second;
  if (l.redis && redis_token) *redis_token = l.token;
  deadlines_.erase({l.expires, l.token});
  deadline_keys_.erase(l.token);
  unref(l.holder, it->first);
  for (const Waiter& w : l.waiters) {
    remove_waiter_deadline(w);
    unref(w.conn, it->first);
    out->push_back(w);
  }
  waiting_ -= l.waiters.size();
  leases_.erase(it);
  return true;
}

bool Leases::hold(std::string_view key, uint64_t conn, uint64_t token, uint64_t lease_ms, uint64_t now,
                  int64_t fill) {
  auto [it, fresh] = leases_.try_emplace(std::string(key));
  if (!fresh) return false;
  it->second.redis = true;
  record(it, token, conn, lease_ms, now, fill);
  return true;
}

bool Leases::fill_of(std::string_view key, uint64_t* holder, int64_t* fill) const {
  auto it = leases_.find(std::string(key));
  if (it == leases_.end()) return false;
  *holder = it->second.holder;
  *fill = it->second.fill;
  return true;
}

bool Leases::local_lease(std::string_view key) const {
  auto it = leases_.find(std::string(key));
  return it != leases_.end() && !it->second.redis;
}

void Leases::hand_over(Map::iterator it, uint64_t now, std::vector<Event>* ev) {
  Lease& l = it->second;
  deadlines_.erase({l.expires, l.token});
  deadline_keys_.erase(l.token);
  unref(l.holder, it->first);
  if (l.redis) {
    // Its waiters (joined while Redis was unreachable) are handed over here as usual.
    ev->push_back({Event::ended, l.holder, 0, l.token, it->first});
    l.redis = false;
  }
  if (l.waiters.empty()) {
    leases_.erase(it);
    return;
  }
  const Waiter w = l.waiters.front();
  l.waiters.pop_front();
  waiting_--;
  remove_waiter_deadline(w);
  unref(w.conn, it->first);
  grant(it, w.conn, w.lease_ms, now);
  ev->push_back({Event::granted, w.conn, w.req, l.token, it->first});
}

bool Leases::release(std::string_view key, uint64_t token, uint64_t now, std::vector<Event>* ev) {
  auto it = leases_.find(std::string(key));
  if (it == leases_.end() || it->second.token != token) return false;
  hand_over(it, now, ev);
  return true;
}

void Leases::drop_conn(uint64_t conn, uint64_t now, std::vector<Event>* ev) {
  auto c = by_conn_.find(conn);
  if (c == by_conn_.end()) return;
  std::vector<std::string> keys;
  for (const auto& [k, n] : c->second) keys.push_back(k);
  for (const std::string& k : keys) {
    auto it = leases_.find(k);
    if (it == leases_.end()) continue;
    auto& ws = it->second.waiters;
    for (auto w = ws.begin(); w != ws.end();) {
      if (w->conn == conn) {
        remove_waiter_deadline(*w);
        unref(conn, k);
        waiting_--;
        w = ws.erase(w);
      } else {
        ++w;
      }
    }
    if (it->second.holder == conn) hand_over(it, now, ev);
  }
  by_conn_.erase(conn);
}

void Leases::expire(uint64_t now, std::vector<Event>* ev) {
  while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
    const auto [when, id] = *deadlines_.begin();
    auto dk = deadline_keys_.find(id);
    if (dk == deadline_keys_.end()) {  // cannot happen: both are updated together
      deadlines_.erase(deadlines_.begin());
      continue;
    }
    auto it = leases_.find(dk->second);
    if (it == leases_.end()) {
      deadlines_.erase(deadlines_.begin());
      deadline_keys_.erase(dk);
      continue;
    }
    Lease& l = it->second;
    if (l.token == id) {
      hand_over(it, now, ev);  // the holder took too long
      continue;
    }
    auto w = std::find_if(l.waiters.begin(), l.waiters.end(), [id = id](const Waiter& x) { return x.seq == id; });
    deadlines_.erase(deadlines_.begin());
    deadline_keys_.erase(dk);
    if (w == l.waiters.end()) continue;
    const Waiter gone = *w;
    l.waiters.erase(w);
    waiting_--;
    timeouts_total_++;
    unref(gone.conn, it->first);
    ev->push_back({Event::timeout, gone.conn, gone.req, 0, it->first});
  }
}

void Leases::drain(std::vector<Waiter>* out, std::vector<std::pair<std::string, uint64_t>>* redis_held) {
  for (auto& [k, l] : leases_) {
    for (const Waiter& w : l.waiters) out->push_back(w);
    if (l.redis && redis_held) redis_held->emplace_back(k, l.token);
  }
  leases_.clear();
  deadlines_.clear();
  deadline_keys_.clear();
  by_conn_.clear();
  waiting_ = 0;
}

}  // namespace nearcache::daemon
