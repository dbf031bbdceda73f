// daemon/redis/write_behind.cc — see write_behind.h.
#include "redis/write_behind.h"

#include <hiredis/hiredis.h>

#include <spdlog/spdlog.h>
#include <unordered_set>
#include <vector>

#include "redis/slots.h"
#include "redis/value.h"

namespace nearcache::redis {

namespace {

constexpr size_t kEntryOverhead = 64;
constexpr const char* kClearCount = "1000";  // SCAN COUNT per CLEAR step

// SCAN MATCH treats * ? [ ] \ specially; the prefix is matched literally.
std::string glob_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

const char* kind_name(int k) {
  static const char* names[] = {"SET", "DELETE", "TOUCH", "CLEAR", "call"};
  return names[k];
}

}  // namespace

WriteBehind::WriteBehind(uv_loop_t* loop, Link* link, Scripts* scripts, const Config& cfg)
    : loop_(loop), link_(link), scripts_(scripts), cfg_(cfg), drop_log_(10000), fail_log_(10000) {
  clear_key_ = clear_counter_key(cfg_.prefix, cfg_.shard_home_slot);
  cluster_ = cfg_.shard_home_slot >= 0;
  uv_timer_init(loop_, &timer_);
  timer_.data = this;
  up_id_ = link_->on_up([this] { on_up(); });
  down_id_ = link_->on_down([this](const std::string&) { on_down(); });
}

WriteBehind::~WriteBehind() {
  link_->remove_listener(up_id_);
  link_->remove_listener(down_id_);
}

void WriteBehind::close(std::function<void()> closed) {
  uv_timer_stop(&timer_);
  closed_ = std::move(closed);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), [](uv_handle_t* h) {
    auto* self = static_cast<WriteBehind*>(h->data);
    if (self->closed_) {
      auto fn = std::move(self->closed_);
      fn();
    }
  });
}

// ------------------------------------------------------------ queueing

WriteBehind::Entry WriteBehind::set_entry(std::string_view key, std::string_view value, uint8_t flags,
                                          uint64_t expiry_ms, uint64_t item_id) const {
  Entry e{Entry::set, std::string(key)};
  e.value = encode_value(value, flags, cfg_.value_format);
  e.expiry = expiry_ms;
  e.item = item_id;
  return e;
}

Enqueued WriteBehind::set(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry_ms,
                          uint64_t item_id) {
  return put(set_entry(key, value, flags, expiry_ms, item_id));
}

Enqueued WriteBehind::fill(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry_ms,
                           uint64_t item_id, int64_t expected) {
  if (!cfg_.conditional_fills || expected == kFillPlain) return set(key, value, flags, expiry_ms, item_id);
  if (expected == kFillRefuse) {
    st_.fills_refused_total++;
    return Enqueued::refused;
  }
  Entry e = set_entry(key, value, flags, expiry_ms, item_id);
  e.fill = true;
  e.expected = expected;
  return put(std::move(e));
}

Enqueued WriteBehind::del(std::string_view key) { return put(Entry{Entry::del, std::string(key)}); }

Enqueued WriteBehind::touch(std::string_view key, uint64_t expiry_ms) {
  Entry e{Entry::touch, std::string(key)};
  e.expiry = expiry_ms;
  return put(std::move(e));
}

Enqueued WriteBehind::put(Entry e) {
  st_.enqueued_total++;
  auto kit = keys_.find(e.key);
  // A fill goes behind the key's queued write, never in its place; it may
  // replace a queued fill (Lease fills: accepted whenever the older one would be).
  if (kit != keys_.end() && kit->second.has_latest && !kit->second.latest->sealed &&
      (!e.fill || kit->second.latest->fill)) {
    It old = kit->second.latest;
    if (e.kind == Entry::touch) {
      if (old->kind == Entry::del) return st_.coalesced_total++, Enqueued::coalesced;  // nothing to touch
      if (old->kind == Entry::set) {
        e.kind = Entry::set, e.value = std::move(old->value), e.item = old->item;
        e.fill = old->fill, e.expected = old->expected;
      }
    }
    e.bytes = e.key.size() + e.value.size() + kEntryOverhead;
    Enqueued r = Enqueued::coalesced;
    if (bytes_ - old->bytes + e.bytes > cfg_.queue_max_bytes) {
      // The newer write does not fit; the older one must not reach Redis after it.
      note_drop(e);
      e = Entry{Entry::del, std::move(e.key)};
      e.bytes = e.key.size() + kEntryOverhead;
      r = Enqueued::dropped;
    } else {
      st_.coalesced_total++;
    }
    remove_queued(old);
    append(std::move(e));
    pump();
    return r;
  }
  e.bytes = e.key.size() + e.value.size() + kEntryOverhead;
  if (depth_ + 1 > cfg_.queue_max_entries || bytes_ + e.bytes > cfg_.queue_max_bytes) {
    note_drop(e);
    return Enqueued::dropped;
  }
  append(std::move(e));
  pump();
  return Enqueued::queued;
}

Enqueued WriteBehind::clear(std::string_view prefix, bool glob) {
  st_.enqueued_total++;
  // Queued writes under the prefix would be removed by the CLEAR anyway (a
  // pattern's go ahead of it: the CLEAR is a barrier, so they are removed too).
  for (auto kit = keys_.begin(); !glob && kit != keys_.end();) {
    KeyState& ks = kit->second;
    if (ks.has_latest && kit->first.starts_with(prefix)) {
      if (!ks.latest->sealed) {
        It e = ks.latest;
        ks.has_latest = false;
        ks.entries--;
        depth_--;
        bytes_ -= e->bytes;
        fifo_.erase(e);
        st_.coalesced_total++;
        if (ks.entries == 0 && ks.calls == 0) {
          kit = keys_.erase(kit);
          continue;
        }
      } else {
        ks.has_latest = false;  // stays queued for the call behind it; the CLEAR comes later
      }
    }
    ++kit;
  }
  Entry c{Entry::clear, std::string(prefix)};
  c.glob = glob;
  c.bytes = prefix.size() + kEntryOverhead;
  append(std::move(c));
  pump();
  return Enqueued::queued;
}

void WriteBehind::append(Entry&& e) {
  if (e.kind != Entry::call) depth_++, bytes_ += e.bytes;
  fifo_.push_back(std::move(e));
  const It it = std::prev(fifo_.end());
  switch (it->kind) {
    case Entry::clear: clears_.push_back(it); break;
    case Entry::call:
      calls_.push_back(it);
      keys_[it->key].calls++;
      break;
    default: {
      KeyState& ks = keys_[it->key];
      ks.entries++;
      ks.latest = it;
      ks.has_latest = true;
    }
  }
}

void WriteBehind::unindex(It it) {
  auto kit = keys_.find(it->key);
  if (kit == keys_.end()) return;
  if (kit->second.has_latest && kit->second.latest == it) kit->second.has_latest = false;
  if (--kit->second.entries == 0 && !kit->second.has_latest && kit->second.calls == 0) keys_.erase(kit);
}

void WriteBehind::drop_call(It it) {
  auto kit = keys_.find(it->key);
  if (kit != keys_.end() && --kit->second.calls == 0 && kit->second.entries == 0 && !kit->second.has_latest)
    keys_.erase(kit);
  calls_.remove(it);
  fifo_.erase(it);
}

void WriteBehind::remove_queued(It it) {
  unindex(it);
  depth_--;
  bytes_ -= it->bytes;
  fifo_.erase(it);
}

void WriteBehind::note_drop(const Entry& e) {
  st_.dropped_total++;
  uint64_t skipped = 0;
  if (drop_log_.allow(&skipped))
    spdlog::warn("redis write-behind queue full ({} operations, {} bytes; limits {} and {}): dropped {} of '{}'{}; "
                 "Redis keeps its older value",
                 depth_, bytes_, cfg_.queue_max_entries, cfg_.queue_max_bytes, kind_name(e.kind), printable(e.key),
                 skipped ? " and " + std::to_string(skipped) + " more since the last report" : "");
}

// ------------------------------------------------------------ read-your-writes

bool WriteBehind::covered(std::string_view key) const {
  for (const It& c : clears_)
    if (key.starts_with(c->key)) return true;
  return false;
}

Pending WriteBehind::pending(std::string_view key, PendingValue* out) const {
  auto kit = keys_.find(std::string(key));
  if (kit != keys_.end() && kit->second.has_latest) {
    const Entry& e = *kit->second.latest;
    switch (e.kind) {
      case Entry::set:
        // A fill is a copy of the database, not a write: a read asks Redis,
        // behind it (after()), rather than serve what may be refused.
        if (e.fill) break;
        if (e.expiry && e.expiry <= mono_ms()) return Pending::deleted;
        if (out) {
          // Queued by this host: "foreign" is a flags-0 value redis_value_format = 1 left bare.
          if (decode_value(e.value, &out->value, &out->flags) == Stored::foreign) out->flags = 0;
          out->expiry_ms = e.expiry;
        }
        return Pending::value;
      case Entry::del: return Pending::deleted;
      case Entry::touch: return Pending::touched;
      default: break;
    }
  }
  return covered(key) ? Pending::deleted : Pending::none;
}

void WriteBehind::after(std::string_view key, std::function<void(bool)> fn) {
  if (!link_->ready()) return fn(false);
  const std::string k(key);
  auto kit = keys_.find(k);
  if (!covered(key)) {
    if (kit == keys_.end()) return fn(true);  // writes in flight are already ahead on the wire
    if (kit->second.entries == 1 && kit->second.has_latest && kit->second.calls == 0 &&
        !flying_.count(k) && !kit->second.latest->not_before) {
      // Out of queue order, which is safe: no CLEAR covers the key, it has no
      // other queued write and no earlier call waits for its turn.
      send_op(kit->second.latest);
      return fn(true);
    }
  }
  if (kit != keys_.end() && kit->second.has_latest) kit->second.latest->sealed = true;
  Entry c{Entry::call, k};
  c.fn = std::move(fn);
  c.deadline = uv_now(loop_) + cfg_.command_timeout_ms;
  append(std::move(c));
  arm_timer();
  pump();
}

// ------------------------------------------------------------ flushing

void WriteBehind::pump() {
  if (pumping_) {
    pump_again_ = true;
    return;
  }
  pumping_ = true;
  do {
    pump_again_ = false;
    if (cluster_) {
      pump_cluster();
      continue;
    }
    while (link_->ready() && !fifo_.empty()) {
      const It it = fifo_.begin();
      if (it->kind == Entry::clear) {
        if (!clear_running_) clear_step(it);
        break;  // the barrier: nothing after it until its SCAN is done
      }
      if (it->kind == Entry::call) {
        auto fn = std::move(it->fn);
        drop_call(it);
        fn(true);
        continue;
      }
      if (inflight_.size() >= cfg_.pipeline) break;
      send_op(it);
    }
  } while (pump_again_);
  pumping_ = false;
  check_drain();
}

// Redis Cluster: in queue order, skipping (and holding back every later
// entry of) a key whose operation is in flight or waiting for a retry; a
// CLEAR still waits for everything ahead of it.
void WriteBehind::pump_cluster() {
  std::unordered_set<std::string> blocked;
  const uint64_t now = uv_now(loop_);
  size_t skipped = 0;
  next_retry_ = 0;
  for (It it = fifo_.begin(); it != fifo_.end() && link_->ready();) {
    const It next = std::next(it);
    if (it->kind == Entry::clear) {
      if (!clear_running_ && blocked.empty()) clear_step(it);
      break;
    }
    if (it->kind == Entry::call) {
      if (blocked.count(it->key)) {
        it = next;
        continue;
      }
      auto fn = std::move(it->fn);
      drop_call(it);
      fn(true);  // may change the queue: start over
      it = fifo_.begin();
      continue;
    }
    if (inflight_.size() >= cfg_.pipeline) break;
    if (it->not_before > now || blocked.count(it->key) || flying_.count(it->key)) {
      if (it->not_before > now && (!next_retry_ || it->not_before < next_retry_)) next_retry_ = it->not_before;
      blocked.insert(it->key);
      if (++skipped > cfg_.pipeline) break;
      it = next;
      continue;
    }
    send_op(it);
    it = next;
  }
  if (next_retry_) arm_timer();
}

bool WriteBehind::holds(std::string_view key) const {
  const std::string k(key);
  return keys_.count(k) || flying_.count(k);
}

void WriteBehind::adopt(HandedOp&& op) {
  st_.enqueued_total++;
  Entry e{op.kind == HandedOp::clear ? Entry::clear : Entry::Kind(op.kind), ""};
  static_cast<OpData&>(e) = std::move(op);
  e.bytes = e.key.size() + e.value.size() + kEntryOverhead;
  append(std::move(e));
  pump();
}

void WriteBehind::hand_over(const std::function<void(HandedOp&&)>& to) {
  fail_calls();
  std::list<Entry> all;
  all.splice(all.end(), fifo_);
  // Unindexed first: `to` may route the keys again (holds() must say no).
  keys_.clear();
  clears_.clear();
  calls_.clear();
  clear_running_ = false;
  for (Entry& e : all) {
    if (e.kind == Entry::call) continue;
    depth_--;
    bytes_ -= e.bytes;
    HandedOp op;
    op.kind = e.kind == Entry::clear ? HandedOp::clear : HandedOp::Kind(e.kind);
    static_cast<OpData&>(op) = std::move(e);
    to(std::move(op));
  }
  check_drain();
}

// MOVED / ASK / TRYAGAIN / CLUSTERDOWN on an operation in flight (cluster
// only): true when it was handed over or put back for a retry.
bool WriteBehind::cluster_redirect(It it, const std::string& err) {
  const Redirect rd = parse_redirect(err);
  if (rd.kind == Redirect::none) return false;
  auto landed = [this](const std::string& key) {
    if (auto f = flying_.find(key); f != flying_.end() && --f->second == 0) flying_.erase(f);
  };
  if (rd.kind == Redirect::moved || rd.kind == Redirect::ask) {
    if (!on_redirect_) return false;
    (rd.kind == Redirect::moved ? st_.moved_total : st_.ask_total)++;
    HandedOp op;
    op.kind = HandedOp::Kind(it->kind);
    // A fill keeps its condition: the script runs on the key's master, and
    // its counter is in the key's slot.
    static_cast<OpData&>(op) = *it;  // a copy: the key is still needed here (a rare path)
    op.asking = rd.kind == Redirect::ask;
    landed(it->key);
    depth_--;
    bytes_ -= it->bytes;
    inflight_.erase(it);
    on_redirect_(std::move(op), rd);
    return true;
  }
  if (++it->retries > kRetries) return false;  // a refusal
  st_.retried_total++;
  landed(it->key);
  it->not_before = uv_now(loop_) + (10ull << std::min(it->retries - 1, 7));
  // An ASKed write keeps ASKING: TRYAGAIN came from the importing master,
  // which takes it once the slot's counter has moved too (or answers MOVED).
  fifo_.splice(fifo_.begin(), inflight_, it);
  KeyState& ks = keys_[it->key];
  ks.entries++;
  if (!ks.has_latest) ks.latest = it, ks.has_latest = true;
  it->sealed = false;
  return true;
}

void WriteBehind::send_op(It it) {
  unindex(it);
  inflight_.splice(inflight_.end(), fifo_, it);
  it->not_before = 0;
  const std::string k = rkey(it->key);
  const uint64_t now = mono_ms();
  const bool expired = it->expiry && it->expiry <= now;
  const std::string ms = it->expiry && !expired ? std::to_string(it->expiry - now) : std::string();
  std::vector<std::string_view> argv;
  switch (it->kind) {
    case Entry::set:
      if (expired) argv = {"UNLINK", k};
      else if (it->expiry) argv = {"SET", k, it->value, "PX", ms};
      else argv = {"SET", k, it->value};
      break;
    case Entry::touch:
      if (expired) argv = {"UNLINK", k};
      else if (it->expiry) argv = {"PEXPIRE", k, ms};
      else argv = {"PERSIST", k};
      break;
    default: argv = {"UNLINK", k}; break;
  }
  // The write and its slot counter's bump in one transaction (slots.h): a
  // host that missed the write's invalidation sees the counter moved.
  const std::string counter = slot_counter_key(cfg_.prefix, key_slot(k));
  // ASKING holds for the whole MULTI ... EXEC (Redis keeps the flag inside a transaction).
  if (it->asking && link_->ready()) link_->command({"ASKING"}, [](const Reply&) {});
  if (it->fill && it->kind == Entry::set) return send_fill(it, k, counter, expired ? "1" : ms);
  if (!link_->ready() || !link_->command({"MULTI"}, [](const Reply&) {})) return requeue_front(inflight_.size() - 1);
  if (cluster_) flying_[it->key]++;
  // A command Redis refuses while queueing it (OOM, NOPERM) makes EXEC answer
  // EXECABORT; the refusal's own reason is the one worth reporting.
  auto queued_err = std::make_shared<std::string>();
  auto note = [queued_err](const Reply& r) {
    if (!r.failed() && r.is_error() && queued_err->empty()) *queued_err = r.error();
  };
  link_->command(argv, note);
  link_->command({"INCR", counter}, note);
  link_->command({"EXEC"}, [this, it, queued_err](const Reply& r) {
    if (r.failed()) return;  // back to the queue when the link reports it down
    // EXECABORT (refused while queued, e.g. OOM) or the write's own error.
    std::string err = r.is_error() ? (queued_err->empty() ? r.error() : *queued_err) : std::string();
    if (err.empty() && r.r->type == REDIS_REPLY_ARRAY && r.r->elements > 0 &&
        r.r->element[0]->type == REDIS_REPLY_ERROR)
      err.assign(r.r->element[0]->str, r.r->element[0]->len);
    else if (err.empty() && r.r->type != REDIS_REPLY_ARRAY)
      err = "the transaction was not executed";
    answered(it, err);
  });
}

// A lease fill: the fill script stores and bumps only if the counter is
// still `expected` (an expired one is stored with PX 1: under the same
// condition nobody wrote since, so it replaces nothing newer).
void WriteBehind::send_fill(It it, const std::string& k, const std::string& counter, const std::string& px) {
  const std::string expected = it->expected == kFillMissing ? std::string() : std::to_string(it->expected);
  const bool sent = link_->ready() && scripts_->eval(Script::fill, {k, counter}, {it->value, px, expected},
                                                     [this, it](const Reply& r) {
    if (r.failed() && !link_->ready()) return;  // lost: on_down puts it back in the queue
    std::string err = r.is_error() ? r.error() : std::string();
    const std::string_view answer = err.empty() ? str_at(r.r, 0) : std::string_view();
    if (err.empty() && answer != "ok" && answer != "refused") err = "unexpected reply to the fill script";
    answered(it, err, answer == "refused");
  });
  if (!sent) return requeue_front(inflight_.size() - 1);
  st_.fills_total++;
  if (cluster_) flying_[it->key]++;
}

// Redis answered an operation in flight: `err` is its error ("" = done),
// fill_refused: a fill whose condition failed (nothing was written).
void WriteBehind::answered(It it, const std::string& err, bool fill_refused) {
  if (!err.empty() && cluster_ && cluster_redirect(it, err)) return pump();
  if (cluster_)
    if (auto f = flying_.find(it->key); f != flying_.end() && --f->second == 0) flying_.erase(f);
  if (!err.empty()) {
    refused(*it, err);
  } else if (fill_refused) {
    st_.fills_refused_total++;
    if (on_fill_refused_) on_fill_refused_(it->key, it->item);
  } else {
    st_.flushed_total++;
    // Redis has the value (or, sent expired as UNLINK, the local copy has expired too).
    if (it->kind == Entry::set && it->item && on_acked_) on_acked_(it->key, it->item);
  }
  depth_--;
  bytes_ -= it->bytes;
  inflight_.erase(it);
  pump();
}

// Moves the last `n`... (see on_down): entries from inflight_ back to the
// front of the queue, oldest first, indexed unless a newer write exists.
void WriteBehind::refused(const Entry& e, const std::string& why) {
  st_.failed_total++;
  st_.last_refusal = std::string(kind_name(e.kind)) + " of '" + printable(e.key) + "': " + why;
  st_.last_refusal_unix_ms = unix_ms();
  // The value never reached Redis: this host must not go on serving it alone.
  const bool drop = e.kind == Entry::set || e.kind == Entry::touch;
  if (drop) st_.refused_dropped_total++;
  if (drop && on_refused_) on_refused_(e.key);
  uint64_t skipped = 0;
  if (!fail_log_.allow(&skipped)) return;
  spdlog::warn("redis: Redis refused {} write(s) since the last report ({} in all, {} local copies dropped); "
               "last: {}",
               st_.failed_total - refusals_logged_, st_.failed_total, st_.refused_dropped_total, st_.last_refusal);
  refusals_logged_ = st_.failed_total;
}

void WriteBehind::requeue_front(size_t keep) {
  auto first = inflight_.begin();
  std::advance(first, keep);
  std::vector<It> moved;
  for (auto i = first; i != inflight_.end(); ++i) moved.push_back(i);
  fifo_.splice(fifo_.begin(), inflight_, first, inflight_.end());
  for (It it : moved) {
    KeyState& ks = keys_[it->key];
    ks.entries++;
    if (!ks.has_latest) ks.latest = it, ks.has_latest = true;
    it->sealed = false;
  }
}

void WriteBehind::clear_step(It it) {
  clear_running_ = true;
  const std::string pattern = it->glob ? glob_escape(cfg_.prefix) + it->key : glob_escape(cfg_.prefix + it->key) + "*";
  const bool sent = scripts_->eval(Script::clear_step, {clear_key_}, {it->cursor, pattern, kClearCount}, [this, it](const Reply& r) {
    clear_running_ = false;
    if (r.failed()) {
      // Lost connection: on_down restarts the CLEAR on the next one. Else the
      // script was refused (NOSCRIPT): retry a few times.
      if (link_->ready() && ++it->retries > 3) {
        spdlog::error("redis: CLEAR of prefix '{}' abandoned: {}", printable(it->key), r.error());
        st_.failed_total++;
        finish_clear(it);
      }
      pump();
      return;
    }
    const redisReply* x = r.r;
    if (r.is_error() || x->type != REDIS_REPLY_ARRAY || x->elements != 2 || x->element[0]->type != REDIS_REPLY_STRING) {
      spdlog::error("redis: CLEAR of prefix '{}' failed: {}", printable(it->key),
                    r.is_error() ? r.error() : std::string("unexpected reply to the SCAN step"));
      st_.failed_total++;
      finish_clear(it);
      pump();
      return;
    }
    st_.cleared_keys_total += uint64_t(x->element[1]->integer);
    it->cursor.assign(x->element[0]->str, x->element[0]->len);
    if (it->cursor == "0") {
      st_.flushed_total++;
      finish_clear(it);
    }
    pump();
  });
  if (!sent) clear_running_ = false;
}

void WriteBehind::finish_clear(It it) {
  clears_.remove(it);
  depth_--;
  bytes_ -= it->bytes;
  fifo_.erase(it);
}

void WriteBehind::on_up() { pump(); }

void WriteBehind::on_down() {
  flying_.clear();
  st_.requeued_total += inflight_.size();
  requeue_front(0);
  clear_running_ = false;
  for (It c : clears_) c->cursor = "0", c->retries = 0;
  fail_calls();
}

void WriteBehind::fail_calls() {
  std::vector<std::function<void(bool)>> fns;
  while (!calls_.empty()) {
    const It c = calls_.front();
    fns.push_back(std::move(c->fn));
    drop_call(c);
  }
  for (auto& fn : fns) fn(false);
}

// ------------------------------------------------------------ deadlines, drain

void WriteBehind::arm_timer() {
  uint64_t when = UINT64_MAX;
  if (!calls_.empty()) when = calls_.front()->deadline;
  if (drain_done_) when = std::min(when, drain_deadline_);
  if (next_retry_) when = std::min(when, next_retry_);
  if (when == UINT64_MAX) {
    uv_timer_stop(&timer_);
    return;
  }
  const uint64_t now = uv_now(loop_);
  uv_timer_start(&timer_, on_timer, when > now ? when - now : 0, 0);
}

void WriteBehind::on_timer(uv_timer_t* t) {
  auto* self = static_cast<WriteBehind*>(t->data);
  const uint64_t now = uv_now(self->loop_);
  std::vector<std::function<void(bool)>> late;
  while (!self->calls_.empty() && self->calls_.front()->deadline <= now) {
    const It c = self->calls_.front();
    late.push_back(std::move(c->fn));
    self->drop_call(c);
  }
  for (auto& fn : late) fn(false);
  if (self->next_retry_ && now >= self->next_retry_) {
    self->next_retry_ = 0;
    self->pump();
  }
  if (self->drain_done_ && now >= self->drain_deadline_) {
    auto done = std::move(self->drain_done_);
    self->drain_done_ = nullptr;
    const uint64_t left = self->depth_;
    if (left)
      spdlog::error("redis: write-behind drain deadline passed with {} operation(s) not in Redis ({}); they are lost",
                    left, self->link_->ready() ? "Redis is slow" : "Redis is unreachable");
    done(left);
  }
  self->arm_timer();
}

void WriteBehind::drain(uint64_t deadline_ms, std::function<void(uint64_t)> done) {
  const uint64_t now = mono_ms();
  drain_deadline_ = uv_now(loop_) + (deadline_ms > now ? deadline_ms - now : 0);
  drain_done_ = std::move(done);
  arm_timer();
  pump();
}

void WriteBehind::check_drain() {
  if (!drain_done_ || depth_ != 0) return;
  auto done = std::move(drain_done_);
  drain_done_ = nullptr;
  arm_timer();
  done(0);
}

QueueStats WriteBehind::stats() const {
  QueueStats s = st_;
  s.depth = depth_;
  s.bytes = bytes_;
  s.in_flight = inflight_.size();
  return s;
}

}  // namespace nearcache::redis
