// daemon/redis/cluster.cc — see cluster.h.
#include "redis/cluster.h"

#include <algorithm>

#include <spdlog/spdlog.h>

#include "redis/slots.h"
#include "redis/tier.h"
#include "redis/util.h"

namespace nearcache::redis {

namespace {
constexpr uint64_t kRefreshAfterMovedMs = 100;
constexpr uint64_t kRefreshDegradedMs = 1000;
constexpr uint64_t kRefreshHealthyMs = 10000;
}  // namespace

struct Cluster::Part {
  HostPort addr;
  int index = 0;
  int home = 0;          // the home slot its marker, clear counter and proof key live in
  bool waiting = false;  // warm restart: seeded, the suspended table waits for its repair
  std::unique_ptr<Tier> tier;
};

Cluster::Cluster(uv_loop_t* loop, const Config& cfg, TableHooks hooks, MakePart make_part,
                 std::function<void()> refresh)
    : loop_(loop), cfg_(cfg), hooks_(std::move(hooks)), make_part_(std::move(make_part)), refresh_(std::move(refresh)) {
  owner_.assign(kSlots, -1);
  for (uv_timer_t* t : {&refresh_timer_, &restart_timer_}) {
    uv_timer_init(loop_, t);
    t->data = this;
  }
  st_.enabled = true;
}

Cluster::~Cluster() = default;

std::vector<bool> Cluster::owned(const Part* p) const {
  std::vector<bool> m(kSlots, false);
  for (uint32_t i = 0; i < kSlots; ++i) m[i] = owner_[i] == p->index;
  return m;
}

std::vector<bool> Cluster::owned_by(const Tier* t) const {
  for (const auto& p : parts_)
    if (p->tier.get() == t) return owned(p.get());
  return std::vector<bool>(kSlots, false);
}

void Cluster::drop_owned(Part* p, const char* why) {
  spdlog::warn("redis cluster: dropping the local entries of {}'s slots: {}", p->addr.where(), why);
  if (hooks_.drop_slots) hooks_.drop_slots(owned(p));
}

Cluster::Part* Cluster::part_for(const HostPort& m, int home_slot) {
  for (auto& p : parts_)
    if (p->addr == m) return p.get();
  auto p = std::make_unique<Part>();
  p->addr = m;
  p->index = int(parts_.size());
  p->home = home_slot < 0 ? 0 : home_slot;  // as Tier::make_part
  Part* raw = p.get();
  TableHooks h;
  h.drop = hooks_.drop;
  h.install = hooks_.install;
  h.install_negative = hooks_.install_negative;
  h.synced = hooks_.synced;  // per key: a warm restart may keep what came from (or reached) Redis
  h.acked = hooks_.acked;
  h.fill_refused = hooks_.fill_refused;
  // Whole-table actions of one master's part act on its slots only.
  h.drop_all = [this, raw](const char* why) { drop_owned(raw, why); };
  h.drop_slots = [this, raw](const std::vector<bool>& slots) {
    std::vector<bool> m = owned(raw);
    for (uint32_t i = 0; i < kSlots; ++i) m[i] = m[i] && slots[i];
    if (hooks_.drop_slots) hooks_.drop_slots(m);
  };
  // The table's suspension is for the whole table: a master's gap past the
  // grace drops that master's slots instead.
  h.suspend = [this, raw](bool on) {
    if (on) drop_owned(raw, "invalidations from it down longer than redis_stale_grace_ms");
    else repaired(raw);  // a seeded part's first repair is done
  };
  parts_.push_back(std::move(p));
  raw->tier = make_part_(m, home_slot, std::move(h));
  raw->tier->queue().set_on_redirect([this](HandedOp&& op, const Redirect& rd) { redirected(std::move(op), rd); });
  raw->tier->repair().set_on_snapshot([this, raw](const Snapshot& s) { snapshot_taken(raw, s); });
  spdlog::info("redis cluster: master {} (home slot {})", m.where(), home_slot);
  raw->tier->start();
  return raw;
}

void Cluster::apply(const SlotMap& map) {
  st_.refreshes_total++;
  last_refresh_ = uv_now(loop_);
  std::vector<int> idx(map.masters.size());
  for (size_t i = 0; i < map.masters.size(); ++i) {
    int home = -1;
    for (uint32_t s = 0; s < kSlots && home < 0; ++s)
      if (map.owner[s] == int(i)) home = int(s);
    idx[i] = part_for(map.masters[i], home)->index;
  }
  std::vector<bool> moved(kSlots, false);
  size_t n_moved = 0;
  for (uint32_t s = 0; s < kSlots; ++s) {
    if (map.owner[s] < 0) continue;  // unserved: writes wait on the last owner
    const int now = idx[size_t(map.owner[s])];
    if (owner_[s] >= 0 && owner_[s] != now) moved[s] = true, n_moved++;
    owner_[s] = now;
  }
  if (n_moved) {
    st_.slots_moved_total += n_moved;
    spdlog::info("redis cluster: {} slot(s) changed master: their local entries are dropped", n_moved);
    if (hooks_.drop_slots) hooks_.drop_slots(moved);
  }
  seed_parts();
  // A master left with no slot (failed over, resharded away): its queued
  // operations go to the slots' masters now (and a warm restart no longer
  // waits for its repair: its slots were dropped as they moved).
  for (auto& p : parts_) {
    if (serves_slots(*p)) continue;
    if (p->tier->queue().stats().depth > p->tier->queue().stats().in_flight)
      p->tier->queue().hand_over([this](HandedOp&& op) { adopt(std::move(op)); });
    repaired(p.get());
  }
  st_.masters = map.masters.size();
  st_.slots_covered = map.covered();
  bool healthy = st_.slots_covered == kSlots;
  for (auto& p : parts_)
    if (healthy && map.find(p->addr) >= 0 && !p->tier->data().ready()) healthy = false;
  schedule_refresh(healthy ? kRefreshHealthyMs : kRefreshDegradedMs);
}

// ---------------------------------------------------------------- warm restart

void Cluster::set_restart(ClusterRestart r) {
  restart_ = std::move(r);
  seeding_ = !restart_.saved.empty();
}

// The first map: each part compares with the saved snapshot of its home slot.
void Cluster::seed_parts() {
  if (!seeding_) return;
  seeding_ = false;
  const std::vector<MasterSnapshot> saved = std::move(restart_.saved);
  restart_.saved.clear();
  const uint64_t now = mono_ms();
  const uint64_t serve_ms = restart_.serve_until_ms > now ? restart_.serve_until_ms - now : 0;
  std::vector<bool> drop(kSlots, false);
  size_t unserved = 0, unmatched = 0;
  for (uint32_t s = 0; s < kSlots; ++s)
    if (owner_[s] < 0) drop[s] = true, unserved++;  // no master to compare with
  for (auto& p : parts_) {
    if (!serves_slots(*p)) continue;
    const std::vector<bool> mine = owned(p.get());
    const MasterSnapshot* e = nullptr;
    for (const MasterSnapshot& m : saved)
      if (m.home_slot == p->home && m.owned.size() == kSlots && m.owned[size_t(p->home)]) e = &m;
    if (!e) {
      unmatched++;
      for (uint32_t s = 0; s < kSlots; ++s) drop[s] = drop[s] || mine[s];
      continue;
    }
    // Its own slots the saved master did not count are unknown (dropped by
    // the compare); the others count 0, as the part's snapshot counts them.
    Snapshot before = e->snap;
    before.slots.resize(kSlots, 0);
    for (uint32_t s = 0; s < kSlots; ++s) before.slots[s] = !mine[s] ? 0 : e->owned[s] ? before.slots[s] : -1;
    p->tier->repair().seed(std::move(before), serve_ms);
    if (serve_ms == 0) p->waiting = true, waiting_++;
  }
  if (unserved || unmatched) {
    spdlog::info("redis cluster: warm restart: dropping the adopted entries of {} unserved slot(s) and of {} "
                 "master(s) without a saved snapshot", unserved, unmatched);
    if (hooks_.drop_slots) hooks_.drop_slots(drop);
  }
  if (waiting_) {
    spdlog::info("redis cluster: warm restart: the adopted table stays suspended until the repair of {} master(s) "
                 "against their saved snapshots (at most redis_stale_grace_ms, {} ms)", waiting_, cfg_.stale_grace_ms);
    if (hooks_.suspend) hooks_.suspend(true);
    uv_timer_start(&restart_timer_, on_restart_timeout, cfg_.stale_grace_ms, 0);
  } else if (serve_ms == 0) {
    if (hooks_.suspend) hooks_.suspend(false);  // nothing left to repair
  } else {
    spdlog::info("redis cluster: warm restart: the adopted table is served for up to {} ms more until each "
                 "master's repair against its saved snapshot", serve_ms);
  }
}

void Cluster::repaired(Part* p) {
  if (!p->waiting) return;
  p->waiting = false;
  if (--waiting_) return;
  uv_timer_stop(&restart_timer_);
  spdlog::info("redis cluster: warm restart: every master's slots are repaired or dropped");
  if (hooks_.suspend) hooks_.suspend(false);
}

void Cluster::on_restart_timeout(uv_timer_t* t) {
  auto* self = static_cast<Cluster*>(t->data);
  if (self->closing_ || !self->waiting_) return;
  for (auto& p : self->parts_) {
    if (!p->waiting) continue;
    self->drop_owned(p.get(), "no repair against its saved snapshot within redis_stale_grace_ms of the restart");
    p->waiting = false;
  }
  self->waiting_ = 0;
  if (self->hooks_.suspend) self->hooks_.suspend(false);
}

// A slot belongs to the latest snapshot of the master that served it; a
// snapshot left without its home slot cannot be matched, and goes.
void Cluster::snapshot_taken(Part* p, const Snapshot& s) {
  if (!restart_.on_snapshots) return;
  MasterSnapshot m{p->home, owned(p), s, mono_ms()};
  if (!m.owned[size_t(m.home_slot)]) return;  // lost its home slot meanwhile: not matchable
  for (MasterSnapshot& e : snaps_)
    for (uint32_t i = 0; i < kSlots; ++i)
      if (m.owned[i]) e.owned[i] = false;
  std::erase_if(snaps_, [](const MasterSnapshot& e) { return !e.owned[size_t(e.home_slot)]; });
  snaps_.push_back(std::move(m));
  restart_.on_snapshots(snaps_);
}

std::vector<HostPort> Cluster::masters() const {
  std::vector<HostPort> m;
  for (const auto& p : parts_) m.push_back(p->addr);
  return m;
}

void Cluster::schedule_refresh(uint64_t in_ms) {
  if (closing_) return;
  if (uv_is_active(reinterpret_cast<uv_handle_t*>(&refresh_timer_)) && uv_timer_get_due_in(&refresh_timer_) <= in_ms)
    return;
  uv_timer_start(&refresh_timer_, on_refresh, in_ms, 0);
}

void Cluster::on_refresh(uv_timer_t* t) {
  auto* self = static_cast<Cluster*>(t->data);
  if (self->closing_) return;
  self->refresh_();
  // apply() reschedules; if the control link cannot answer, try again.
  self->schedule_refresh(kRefreshDegradedMs);
}

void Cluster::error_reply(std::string_view error) {
  const Redirect rd = parse_redirect(error);
  if (rd.kind != Redirect::moved && rd.kind != Redirect::ask) return;
  st_.redirect_replies_total++;
  if (rd.kind == Redirect::moved) schedule_refresh(kRefreshAfterMovedMs);
}

// A MOVED names the slot's master now: its local entries are dropped (they
// were covered by the old master's invalidations), the map is refreshed soon.
void Cluster::moved_slot(uint32_t slot, Part* to) {
  if (owner_[slot] != to->index) {
    std::vector<bool> m(kSlots, false);
    m[slot] = true;
    st_.slots_moved_total++;
    if (hooks_.drop_slots) hooks_.drop_slots(m);
    owner_[slot] = to->index;
  }
  schedule_refresh(kRefreshAfterMovedMs);
}

void Cluster::redirected(HandedOp&& op, const Redirect& rd) {
  Part* to = nullptr;
  if (closing_) {
    // Draining: a known master still takes it; no new part is started now.
    for (auto& p : parts_)
      if (p->addr == rd.to) to = p.get();
    if (!to) {
      st_.lost_in_shutdown_total++;
      spdlog::error("redis cluster: a write of '{}' redirected to {} during shutdown is lost", printable(op.key),
                    rd.to.where());
      return;
    }
  } else {
    to = part_for(rd.to, int(rd.slot));
  }
  if (rd.kind == Redirect::moved) moved_slot(rd.slot, to);
  to->tier->queue().adopt(std::move(op));
}

Cluster::Part* Cluster::route(std::string_view key) {
  for (auto& p : parts_)
    if (p->tier->queue().holds(key)) return p.get();
  const int o = owner_[key_slot(cfg_.prefix + std::string(key))];
  return o >= 0 ? parts_[size_t(o)].get() : nullptr;
}

bool Cluster::serves_slots(const Part& p) const {
  return std::find(owner_.begin(), owner_.end(), p.index) != owner_.end();
}

void Cluster::adopt(HandedOp&& op) {
  if (op.kind == HandedOp::clear) {
    // A CLEAR covers every slot: every master that serves some runs it.
    for (auto& p : parts_) {
      if (serves_slots(*p)) p->tier->queue().adopt(HandedOp(op));
    }
    return;
  }
  op.asking = false;
  if (Part* p = route(op.key)) p->tier->queue().adopt(std::move(op));
}

// ---------------------------------------------------------------- TierApi, routed

Enqueued Cluster::set(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry_ms,
                      uint64_t item_id) {
  Part* p = route(key);
  return p ? p->tier->set(key, value, flags, expiry_ms, item_id) : Enqueued::dropped;
}

// A fill is routed as a SET; redirected (MOVED/ASK), the fill script runs on
// the key's new master, where its slot counter is too (write_behind.cc).
Enqueued Cluster::fill(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry_ms,
                       uint64_t item_id, int64_t expected) {
  Part* p = route(key);
  return p ? p->tier->fill(key, value, flags, expiry_ms, item_id, expected) : Enqueued::dropped;
}

int64_t Cluster::fill_base(std::string_view key) {
  const int o = owner_[key_slot(cfg_.prefix + std::string(key))];
  return o >= 0 ? parts_[size_t(o)]->tier->fill_base(key) : kFillRefuse;
}

Enqueued Cluster::del(std::string_view key) {
  Part* p = route(key);
  return p ? p->tier->del(key) : Enqueued::dropped;
}

Enqueued Cluster::touch(std::string_view key, uint64_t expiry_ms) {
  Part* p = route(key);
  return p ? p->tier->touch(key, expiry_ms) : Enqueued::dropped;
}

Enqueued Cluster::clear(std::string_view prefix) {
  for (auto& p : parts_) {
    if (serves_slots(*p)) p->tier->clear(prefix);
  }
  return Enqueued::queued;
}

Enqueued Cluster::clear_match(std::string_view pattern) {
  for (auto& p : parts_) {
    if (serves_slots(*p)) p->tier->clear_match(pattern);
  }
  return Enqueued::queued;
}

// A read answered MOVED is read once more from the slot's new master (the
// map learns the move); ASK and anything else end as they are (a miss).
Lookup Cluster::get(std::string_view key, Fetched* now, FetchFn done) {
  Part* p = route(key);
  if (!p) return Lookup::unavailable;
  auto again = [this, k = std::string(key), done](const Fetched& f) {
    const Redirect rd = f.kind == Fetched::Kind::unavailable ? parse_redirect(f.error) : Redirect{};
    if (rd.kind != Redirect::moved || closing_) return done(f);
    Part* to = part_for(rd.to, int(rd.slot));
    moved_slot(rd.slot, to);
    Fetched now2;
    switch (to->tier->get(k, &now2, done)) {
      case Lookup::hit: return done(now2);
      case Lookup::pending: return;
      default: return done(f);
    }
  };
  return p->tier->get(key, now, std::move(again));
}

// An ADD/REPLACE/INCR/LEASE/RELEASE answered MOVED was not executed: it is sent
// once more to the slot's new master (the map learns the move). `op(part,
// cb)` starts it on a part; false = that part's link is down.
bool Cluster::atomic(std::string_view key, const std::function<bool(Part*, AtomicFn)>& op, AtomicFn cb) {
  Part* p = route(key);
  if (!p) return false;
  auto again = [this, op, cb](const AtomicResult& r) {
    Redirect rd;
    if (r.kind == AtomicResult::Kind::unavailable) {
      const size_t at = r.error.find("MOVED ");
      if (at != std::string::npos) rd = parse_redirect(std::string_view(r.error).substr(at));
    }
    if (rd.kind != Redirect::moved || closing_) return cb(r);
    Part* to = part_for(rd.to, int(rd.slot));
    moved_slot(rd.slot, to);
    if (!op(to, cb)) cb(r);
  };
  return op(p, std::move(again));
}

bool Cluster::add(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry_ms, AtomicFn cb) {
  return atomic(key, [k = std::string(key), v = std::string(value), flags, expiry_ms](Part* p, AtomicFn fn) {
    return p->tier->add(k, v, flags, expiry_ms, std::move(fn));
  }, std::move(cb));
}

bool Cluster::replace(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry_ms,
                      AtomicFn cb) {
  return atomic(key, [k = std::string(key), v = std::string(value), flags, expiry_ms](Part* p, AtomicFn fn) {
    return p->tier->replace(k, v, flags, expiry_ms, std::move(fn));
  }, std::move(cb));
}

bool Cluster::pttl(std::string_view key, AtomicFn cb) {
  return atomic(key, [k = std::string(key)](Part* p, AtomicFn fn) { return p->tier->pttl(k, std::move(fn)); },
                std::move(cb));
}

bool Cluster::lock(LockOp op, std::string_view name, std::string_view token, uint64_t ms, uint64_t max_ms,
                   AtomicFn cb) {
  return atomic(name, [op, k = std::string(name), t = std::string(token), ms, max_ms](Part* p, AtomicFn fn) {
    return p->tier->lock(op, k, t, ms, max_ms, std::move(fn));
  }, std::move(cb));
}

bool Cluster::incr(std::string_view key, __int128 delta, AtomicFn cb) {
  return atomic(key, [k = std::string(key), delta](Part* p, AtomicFn fn) {
    return p->tier->incr(k, delta, std::move(fn));
  }, std::move(cb));
}

bool Cluster::lease(std::string_view key, uint64_t token, uint64_t lease_ms, AtomicFn cb) {
  return atomic(key, [k = std::string(key), token, lease_ms](Part* p, AtomicFn fn) {
    return p->tier->lease(k, token, lease_ms, std::move(fn));
  }, std::move(cb));
}

bool Cluster::release(std::string_view key, uint64_t token, AtomicFn cb) {
  return atomic(key, [k = std::string(key), token](Part* p, AtomicFn fn) {
    return p->tier->release(k, token, std::move(fn));
  }, std::move(cb));
}

uint64_t Cluster::wait_lease(std::string_view key, uint64_t token, uint64_t lease_ms, uint64_t deadline_ms,
                             AtomicFn cb) {
  Part* p = route(key);
  if (!p) {
    AtomicResult r;
    r.error = "no master serves the key's slot";
    cb(r);
    return 0;
  }
  const uint64_t id = next_wait_++;
  auto wrapped = [this, id, cb = std::move(cb)](const AtomicResult& r) {
    waits_.erase(id);
    cb(r);
  };
  const uint64_t inner = p->tier->wait_lease(key, token, lease_ms, deadline_ms, std::move(wrapped));
  waits_[id] = {p, inner};
  return id;
}

void Cluster::cancel_wait(uint64_t id) {
  auto it = waits_.find(id);
  if (it == waits_.end()) return;
  auto [p, inner] = it->second;
  waits_.erase(it);
  p->tier->cancel_wait(inner);
}

void Cluster::wake_lease_waiters(std::string_view key) {
  if (Part* p = route(key)) p->tier->wake_lease_waiters(key);
}

void Cluster::set_password(const std::string& password) {
  for (auto& p : parts_) p->tier->set_password(password);
}

void Cluster::set_tls(std::shared_ptr<const TlsClient> tls) {
  for (auto& p : parts_) p->tier->set_tls(tls);
}

// ---------------------------------------------------------------- status, shutdown

namespace {
int state_rank(LinkState s) { return s == LinkState::ready ? 0 : s == LinkState::stopped ? 1 : 2; }

void add_link(LinkStatus* to, const LinkStatus& a, const std::string& where, bool first) {
  if (first || state_rank(a.state) > state_rank(to->state)) to->state = a.state;
  if (!a.last_error.empty() && (to->last_error.empty() || a.state != LinkState::ready))
    to->last_error = where + ": " + a.last_error;
  to->since_unix_ms = std::max(to->since_unix_ms, a.since_unix_ms);
  to->connects_total += a.connects_total;
  to->failures_total += a.failures_total;
  to->resolves_total += a.resolves_total;
  to->timeouts_total += a.timeouts_total;
  to->pending += a.pending;
  to->tls = a.tls;
  to->tls_verify = a.tls_verify;
  if (!a.tls_verify_error.empty()) to->tls_verify_error = a.tls_verify_error;
  to->tls_verify_failures_total += a.tls_verify_failures_total;
}

void add_queue(QueueStats* to, const QueueStats& a) {
  to->depth += a.depth, to->bytes += a.bytes, to->in_flight += a.in_flight;
  to->enqueued_total += a.enqueued_total, to->coalesced_total += a.coalesced_total;
  to->flushed_total += a.flushed_total, to->dropped_total += a.dropped_total, to->failed_total += a.failed_total;
  to->requeued_total += a.requeued_total, to->cleared_keys_total += a.cleared_keys_total;
  to->refused_dropped_total += a.refused_dropped_total;
  if (a.last_refusal_unix_ms > to->last_refusal_unix_ms)
    to->last_refusal = a.last_refusal, to->last_refusal_unix_ms = a.last_refusal_unix_ms;
  to->moved_total += a.moved_total, to->ask_total += a.ask_total, to->retried_total += a.retried_total;
  to->fills_total += a.fills_total, to->fills_refused_total += a.fills_refused_total;
}
}  // namespace

void Cluster::add_status(TierStatus* s) const {
  bool first = true;
  s->coherent = !parts_.empty();
  std::string masters;
  for (const auto& p : parts_) {
    if (!serves_slots(*p)) continue;  // a former master: not part of the cluster's health
    const TierStatus t = p->tier->status();
    const std::string where = p->addr.where();
    add_link(&s->data, t.data, where, first);
    add_link(&s->invalidation, t.invalidation, where, first);
    first = false;
    s->coherent = s->coherent && t.coherent;
    s->degraded = s->degraded || t.degraded;
    add_queue(&s->queue, t.queue);
    ReadStats& r = s->reads;
    r.hits_total += t.reads.hits_total, r.queue_hits_total += t.reads.queue_hits_total;
    r.misses_total += t.reads.misses_total, r.errors_total += t.reads.errors_total;
    r.unavailable_total += t.reads.unavailable_total, r.joined_total += t.reads.joined_total;
    r.stale_total += t.reads.stale_total, r.oversize_total += t.reads.oversize_total;
    r.foreign_total += t.reads.foreign_total;
    InvalidationStats& i = s->inval;
    i.keys_total += t.inval.keys_total, i.flush_all_total += t.inval.flush_all_total;
    i.lost_total += t.inval.lost_total, i.established_total += t.inval.established_total;
    i.heartbeat_misses_total += t.inval.heartbeat_misses_total;
    s->atomics.errors_total += t.atomics.errors_total;
    RepairStats& q = s->repair;
    q.snapshots_total += t.repair.snapshots_total;
    q.snapshot_us_last = std::max(q.snapshot_us_last, t.repair.snapshot_us_last);
    q.repairs_total += t.repair.repairs_total, q.repairs_full_total += t.repair.repairs_full_total;
    q.slots_dropped_total += t.repair.slots_dropped_total, q.flush_ignored_total += t.repair.flush_ignored_total;
    s->local_flushes_total += t.local_flushes_total;
    masters += (masters.empty() ? "" : ",") + where;
  }
  s->inval.coherent = s->coherent;
  s->repair.suspended = waiting_ > 0;  // the table's (a part drops its slots instead of suspending)
  s->master = masters;
}

ClusterStatus Cluster::status() const {
  ClusterStatus s = st_;
  for (const auto& p : parts_) {
    const QueueStats q = p->tier->queue().stats();
    s.moved_total += q.moved_total;
    s.ask_total += q.ask_total;
    s.retried_total += q.retried_total;
  }
  return s;
}

void Cluster::shutdown(uint64_t deadline_ms, std::function<void(uint64_t)> done) {
  closing_ = true;
  uv_timer_stop(&refresh_timer_);
  uv_timer_stop(&restart_timer_);
  struct State {
    size_t left;
    uint64_t lost = 0;
    std::function<void(uint64_t)> done;
  };
  auto st = std::make_shared<State>(State{parts_.size() + 2, 0, std::move(done)});
  auto one = [st](uint64_t lost) {
    st->lost += lost;
    if (--st->left == 0) st->done(st->lost);
  };
  timer_closed_ = [one] { one(0); };
  for (uv_timer_t* t : {&refresh_timer_, &restart_timer_})
    uv_close(reinterpret_cast<uv_handle_t*>(t), [](uv_handle_t* h) { static_cast<Cluster*>(h->data)->timer_closed_(); });
  for (auto& p : parts_) p->tier->shutdown_until(deadline_ms, one);
}

}  // namespace nearcache::redis
