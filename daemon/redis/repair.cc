// daemon/redis/repair.cc — see repair.h.
#include "redis/repair.h"

#include <hiredis/hiredis.h>

#include <random>
#include <spdlog/spdlog.h>

#include "redis/slots.h"
#include "redis/util.h"
#include "redis/write_behind.h"

namespace nearcache::redis {

namespace {
constexpr size_t kPage = 1024;  // counters per MGET

int64_t to_int(std::string_view s) {
  if (s.empty()) return -1;
  int64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return -1;
    v = v * 10 + (c - '0');
  }
  return v;
}

int64_t counter_of(const redisReply* x) {
  if (!x || x->type != REDIS_REPLY_STRING) return -1;
  return to_int(std::string_view(x->str, x->len));
}
}  // namespace

bool parse_replication(std::string_view info, ReplPos* out) {
  *out = ReplPos{};
  size_t pos = 0;
  while (pos < info.size()) {
    size_t end = info.find('\n', pos);
    if (end == std::string_view::npos) end = info.size();
    std::string_view line = info.substr(pos, end - pos);
    pos = end + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    const std::string_view k = line.substr(0, colon), v = line.substr(colon + 1);
    if (k == "master_replid") out->replid = v;
    else if (k == "master_replid2") out->replid2 = v;
    else if (k == "master_repl_offset") out->offset = to_int(v);
    else if (k == "second_repl_offset") out->offset2 = v == "-1" ? -1 : to_int(v);
  }
  return !out->replid.empty() && out->offset >= 0;
}

Verdict compare(const Snapshot* before, const Snapshot& after, std::vector<bool>* drop, size_t* dropped,
                std::string* why) {
  *dropped = 0;
  drop->assign(kSlots, false);
  if (!before) return *why = "no snapshot taken while invalidations flowed", Verdict::all;
  const ReplPos &b = before->repl, &a = after.repl;
  const bool same = !b.replid.empty() && a.replid == b.replid && a.offset >= b.offset;
  // A promoted replica: its history of the old id runs up to second_repl_offset - 1.
  const bool promoted = !b.replid.empty() && a.replid2 == b.replid && a.offset2 > b.offset;
  const bool proven = !before->proof.empty() && after.proof_checked == before->proof && after.holds;
  if (!same && !promoted && !proven)
    return *why = "Redis cannot be shown to hold the snapshot (restarted, or a failover that lost writes)",
           Verdict::all;
  if (before->marker.empty() || after.marker != before->marker)
    return *why = "the flush marker changed (the database was flushed)", Verdict::all;
  if (after.clears != before->clears) return *why = "a CLEAR ran meanwhile", Verdict::all;
  if (before->slots.size() != kSlots || after.slots.size() != kSlots) return *why = "counters unread", Verdict::all;
  for (uint32_t i = 0; i < kSlots; ++i) {
    const int64_t x = before->slots[i], y = after.slots[i];
    if (x < 0 || y < 0 || x != y) (*drop)[i] = true, ++*dropped;
  }
  if (*dropped == kSlots) return *why = "every slot changed or has no counter", Verdict::all;
  return *dropped ? Verdict::slots : Verdict::nothing;
}

Repair::Repair(uv_loop_t* loop, Link* data, Invalidation* inval, const Config& cfg, Hooks h)
    : loop_(loop), data_(data), inval_(inval), cfg_(cfg), h_(std::move(h)) {
  counter_keys_.reserve(kSlots);
  for (uint32_t i = 0; i < kSlots; ++i) counter_keys_.push_back(slot_counter_key(cfg_.prefix, i));
  clear_key_ = clear_counter_key(cfg_.prefix, cfg_.shard_home_slot);
  marker_key_ = flush_marker_key(cfg_.prefix, cfg_.shard_home_slot);
  for (uv_timer_t* t : {&grace_, &refresh_}) {
    uv_timer_init(loop_, t);
    t->data = this;
    open_timers_++;
  }
}

Repair::~Repair() = default;

void Repair::close(std::function<void()> closed) {
  closing_ = true;
  closed_ = std::move(closed);
  for (uv_timer_t* t : {&grace_, &refresh_})
    uv_close(reinterpret_cast<uv_handle_t*>(t), [](uv_handle_t* h) {
      auto* self = static_cast<Repair*>(h->data);
      if (--self->open_timers_ == 0 && self->closed_) {
        auto fn = std::move(self->closed_);
        fn();
      }
    });
}

std::string Repair::new_epoch() const {
  std::random_device rd;
  char buf[33];
  snprintf(buf, sizeof buf, "%08x%08x%08x%08x", rd(), rd(), rd(), unsigned(uv_hrtime()));
  return buf;
}

void Repair::lost() {
  gen_++;
  reading_ = false;
  if (h_.invalidate_reads) h_.invalidate_reads();
  uv_timer_stop(&refresh_);
  if (cfg_.stale_grace_ms == 0) {
    // No grace: drop, and serve nothing stored meanwhile (a fill read from
    // the database may be overtaken by a write this host will not hear of)
    // until invalidations flow again.
    gap_ = true;
    h_.drop_all("invalidations stopped");
    return suspend_table("redis_stale_grace_ms = 0: this host's table is dropped and suspended until "
                         "invalidations resume");
  }
  if (!gap_) {
    gap_ = true;
    uv_timer_start(&grace_, on_grace, cfg_.stale_grace_ms, 0);
    spdlog::warn("redis: serving this host's table for redis_stale_grace_ms ({} ms) while invalidations are down",
                 cfg_.stale_grace_ms);
  }
}

void Repair::suspend_table(const char* why) {
  if (st_.suspended || closing_) return;
  st_.suspended = true;
  st_.suspensions_total++;
  spdlog::warn("redis: {}", why);
  h_.suspend(true);
}

void Repair::resume_table() {
  if (!st_.suspended) return;
  st_.suspended = false;
  h_.suspend(false);
}

void Repair::on_grace(uv_timer_t* t) {
  auto* self = static_cast<Repair*>(t->data);
  if (!self->gap_) return;
  self->suspend_table("invalidations down longer than redis_stale_grace_ms: this host's table is suspended "
                      "(kept, not served) until the repair");
}

void Repair::coherent() {
  const uint64_t gen = ++gen_;
  const bool was_coherent = ever_coherent_;
  ever_coherent_ = true;
  if (gap_ && (cfg_.stale_grace_ms == 0 || !base_)) {
    // Nothing to compare with (the first connection: what the table holds came
    // before any invalidation was received), or today's strictness: whatever
    // the table holds may have missed invalidations. At once, as coherence starts.
    h_.drop_all(was_coherent ? "invalidations (re)started" : "invalidations started");
    gap_ = false;
    uv_timer_stop(&grace_);
    // Nothing is left that may have missed an invalidation (also a warm
    // restart seeded with redis_stale_grace_ms 0).
    resume_table();
  }
  snapshot([this, gen](std::optional<Snapshot> s) {
    if (!s || gen != gen_ || closing_) return;  // lost again: the next coherent() tries again
    healthy(std::move(*s));
  });
}

void Repair::healthy(Snapshot s) {
  if (gap_) {
    std::vector<bool> drop;
    size_t n = 0;
    std::string why;
    const Verdict v = compare(base_ ? &*base_ : nullptr, s, &drop, &n, &why);
    st_.repairs_total++;
    if (v == Verdict::all) {
      st_.repairs_full_total++;
      const std::string msg = "repair after a gap in invalidations: " + why;
      h_.drop_all(msg.c_str());
    } else if (v == Verdict::slots) {
      st_.slots_dropped_total += n;
      spdlog::info("redis: repair after a gap in invalidations: {} of {} slots were written meanwhile", n, kSlots);
      h_.drop_slots(drop);
    } else {
      spdlog::info("redis: repair after a gap in invalidations: nothing was written meanwhile");
    }
    gap_ = false;
    uv_timer_stop(&grace_);
    resume_table();
  }
  const std::string old_proof = base_ ? base_->proof : std::string();
  base_ = std::move(s);
  marker_ = base_->marker;
  if (on_snapshot_) on_snapshot_(*base_);
  // The saved snapshot names the new proof now: the old one can go.
  if (!old_proof.empty() && old_proof != base_->proof) data_->command({"DEL", old_proof}, [](const Reply&) {});
  uv_timer_start(&refresh_, on_refresh, 10 * cfg_.heartbeat_ms, 0);
}

void Repair::seed(Snapshot before, uint64_t serve_ms) {
  base_ = std::move(before);
  marker_ = base_->marker;
  gap_ = true;
  st_.suspended = serve_ms == 0;
  if (serve_ms) uv_timer_start(&grace_, on_grace, serve_ms, 0);
}

void Repair::unseed() {
  uv_timer_stop(&grace_);
  base_.reset();
  st_.suspended = false;
}

void Repair::on_refresh(uv_timer_t* t) {
  auto* self = static_cast<Repair*>(t->data);
  if (self->gap_ || self->closing_ || !self->inval_->coherent()) return;
  const uint64_t gen = self->gen_;
  self->snapshot([self, gen](std::optional<Snapshot> s) {
    if (!s || gen != self->gen_ || self->gap_ || self->closing_) return;
    self->healthy(std::move(*s));
  });
}

void Repair::snapshot(SnapFn done) {
  if (reading_) return;  // the one in progress serves (its gen check voids it when stale)
  reading_ = true;
  const uint64_t gen = gen_;
  inval_->fence([this, gen, done = std::move(done)](bool ok) mutable {
    if (!ok || gen != gen_) return void(reading_ = false);
    read(gen, std::move(done));
  });
}

void Repair::read(uint64_t gen, SnapFn done) {
  struct State {
    Snapshot s;
    size_t left = 0;
    bool failed = false;
    uint64_t t0 = 0;
  };
  auto st = std::make_shared<State>();
  st->s.slots.assign(kSlots, -1);
  st->t0 = uv_hrtime();
  auto finish = [this, st, gen, done = std::move(done)]() mutable {
    if (--st->left) return;
    if (st->failed || gen != gen_) {
      reading_ = false;
      return done(std::nullopt);
    }
    st_.snapshot_us_last = (uv_hrtime() - st->t0) / 1000;
    // Invalidations for writes the counters include may still be on their way.
    inval_->fence([this, st, gen, done = std::move(done)](bool ok) mutable {
      reading_ = false;
      if (!ok || gen != gen_) return done(std::nullopt);
      st_.snapshots_total++;
      done(std::move(st->s));
    });
  };
  auto fn = std::make_shared<decltype(finish)>(std::move(finish));
  // soft: an error answer (OOM refusing the proof's SET) fails nothing; it only proves nothing.
  auto send = [&](const std::vector<std::string_view>& argv, std::function<void(const Reply&)> on, bool soft = false) {
    st->left++;
    const bool sent = data_->command(argv, [st, fn, soft, on = std::move(on)](const Reply& r) {
      if (r.is_error()) st->failed = st->failed || !soft || r.failed();
      else on(r);
      (*fn)();
    });
    if (!sent) st->left--, st->failed = true;
  };
  st->left++;  // held until every command is sent
  const std::string epoch = new_epoch();
  send({"SET", marker_key_, epoch, "NX"}, [](const Reply&) {});
  send({"GET", marker_key_}, [st](const Reply& r) {
    if (r.r->type == REDIS_REPLY_STRING) st->s.marker.assign(r.r->str, r.r->len);
  });
  if (h_.owned_slots) {
    const std::vector<bool> owned = h_.owned_slots();
    for (uint32_t i = 0; i < kSlots; ++i) {
      if (i >= owned.size() || !owned[i]) {
        st->s.slots[i] = 0;
        continue;
      }
      send({"GET", counter_keys_[i]}, [st, i](const Reply& r) { st->s.slots[i] = counter_of(r.r); });
    }
  }
  for (size_t first = 0; !h_.owned_slots && first < kSlots; first += kPage) {
    std::vector<std::string_view> argv{"MGET"};
    for (size_t i = first; i < first + kPage; ++i) argv.push_back(counter_keys_[i]);
    send(argv, [st, first](const Reply& r) {
      if (r.r->type != REDIS_REPLY_ARRAY || r.r->elements != kPage) return void(st->failed = true);
      for (size_t i = 0; i < kPage; ++i) st->s.slots[first + i] = counter_of(r.r->element[i]);
    });
  }
  send({"GET", clear_key_}, [st](const Reply& r) { st->s.clears = counter_of(r.r); });
  send({"INFO", "replication"}, [st](const Reply& r) {
    if (r.r->type == REDIS_REPLY_STRING || r.r->type == REDIS_REPLY_STATUS)
      parse_replication(std::string_view(r.r->str, r.r->len), &st->s.repl);
  });
  // The previous proof, then this one's, after every read above (one
  // connection: in order). A day's expiry: a daemon gone longer drops all.
  if (base_ && !base_->proof.empty()) {
    st->s.proof_checked = base_->proof;
    send({"EXISTS", base_->proof}, [st](const Reply& r) { st->s.holds = r.r->type == REDIS_REPLY_INTEGER && r.r->integer == 1; },
         true);
  }
  const std::string proof = marker_key_ + ":proof:" + new_epoch();
  send({"SET", proof, "1", "PX", "86400000"}, [st, proof](const Reply& r) {
    if (r.r->type == REDIS_REPLY_STATUS) st->s.proof = proof;
  }, true);
  (*fn)();
}

void Repair::flush() {
  if (h_.invalidate_reads) h_.invalidate_reads();
  if (marker_.empty()) return h_.drop_all("Redis was flushed (FLUSHDB/FLUSHALL)");
  const std::string expect = marker_;
  const bool sent = data_->command({"GET", marker_key_}, [this, expect](const Reply& r) {
    if (closing_) return;
    if (!r.is_error() && r.r->type == REDIS_REPLY_STRING && std::string_view(r.r->str, r.r->len) == expect) {
      st_.flush_ignored_total++;
      spdlog::info("redis: a flush of another database (this one's marker is intact): nothing dropped");
      return;
    }
    marker_.clear();
    if (base_) base_->marker.clear();  // a later comparison with it must fail
    h_.drop_all("Redis was flushed (FLUSHDB/FLUSHALL)");
    // A new epoch for the next flush: the snapshot's SET NX writes it.
    if (inval_->coherent() && !gap_) {
      const uint64_t gen = gen_;
      snapshot([this, gen](std::optional<Snapshot> s) {
        if (s && gen == gen_ && !gap_ && !closing_) healthy(std::move(*s));
      });
    }
  });
  if (!sent) {
    marker_.clear();
    h_.drop_all("Redis was flushed (FLUSHDB/FLUSHALL)");
  }
}

RepairStats Repair::stats() const { return st_; }

int64_t Repair::base_counter(uint32_t slot) const {
  if (!base_ || slot >= base_->slots.size()) return kFillRefuse;
  const int64_t v = base_->slots[slot];
  // 0: not read (another master's slot); a counter INCR made is at least 1.
  return v < 0 ? kFillMissing : v == 0 ? kFillRefuse : v;
}

}  // namespace nearcache::redis
