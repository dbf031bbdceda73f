// daemon/redis/invalidation.cc — see invalidation.h.
#include "redis/invalidation.h"

#include <hiredis/hiredis.h>

#include <random>
#include <spdlog/spdlog.h>

#include "redis/util.h"

namespace nearcache::redis {

namespace {
constexpr std::string_view kInvalidateChannel = "__redis__:invalidate";
constexpr uint64_t kMissedBeats = 3;

std::string random_hex() {
  std::random_device rd;
  const uint64_t x = (uint64_t(rd()) << 32) ^ rd() ^ uv_hrtime();
  char buf[17];
  snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(x));
  return buf;
}
}  // namespace

Invalidation::Invalidation(uv_loop_t* loop, Link* data, const Endpoint& ep, const Config& cfg, Handlers h)
    : loop_(loop), data_(data), cfg_(cfg), h_(std::move(h)) {
  LinkOptions o = data->options();
  o.name = "invalidation";
  sub_ = std::make_unique<Link>(loop, ep, o);
  hb_channel_ = "__nearcache__:heartbeat:" + random_hex();
  uv_timer_init(loop_, &beat_);
  beat_.data = this;

  // Subscriber connection: learn its id, then subscribe; ready once both
  // subscriptions are confirmed.
  sub_->add_setup([this](Link& l, Link::Done done) {
    const bool sent = l.command({"CLIENT", "ID"}, [this, &l, done](const Reply& r) {
      if (r.is_error() || r.r->type != REDIS_REPLY_INTEGER) return done(false, "CLIENT ID failed: " + r.error());
      sub_id_ = r.r->integer;
      confirmations_ = 0;
      setup_done_ = done;
      if (!l.subscribe({kInvalidateChannel, hb_channel_}, [this](const redisReply* m) { on_message(m); }))
        done(false, "cannot send SUBSCRIBE");
    });
    if (!sent) done(false, "cannot send CLIENT ID");
  });
  sub_->on_up([this] {
    sub_ready_ = true;
    try_track();
  });
  sub_->on_down([this](const std::string& why) {
    sub_ready_ = false;
    lose("invalidation connection lost: " + why);
  });
  data_up_id_ = data_->on_up([this] { try_track(); });
  data_down_id_ = data_->on_down([this](const std::string& why) {
    tracked_data_gen_ = 0;  // tracking ends with its connection
    tracking_sent_ = false;
    lose("data connection lost: " + why);
  });
}

Invalidation::~Invalidation() {
  data_->remove_listener(data_up_id_);
  data_->remove_listener(data_down_id_);
}

void Invalidation::start() {
  sub_->start();
  uv_timer_start(&beat_, on_beat, cfg_.heartbeat_ms, cfg_.heartbeat_ms);
}

void Invalidation::close(std::function<void()> closed) {
  closed_ = std::move(closed);
  coherent_ = false;
  uv_timer_stop(&beat_);
  closing_ = 2;
  fail_fences();
  auto one = [this] {
    if (--closing_ == 0 && closed_) {
      auto fn = std::move(closed_);
      fn();
    }
  };
  uv_close(reinterpret_cast<uv_handle_t*>(&beat_), [](uv_handle_t* h) {
    auto* self = static_cast<Invalidation*>(h->data);
    if (--self->closing_ == 0 && self->closed_) {
      auto fn = std::move(self->closed_);
      fn();
    }
  });
  sub_->close(one);
}

void Invalidation::on_message(const redisReply* m) {
  if (m->type != REDIS_REPLY_ARRAY || m->elements < 3 || m->element[0]->type != REDIS_REPLY_STRING) return;
  const std::string_view type(m->element[0]->str, m->element[0]->len);
  const redisReply* ch = m->element[1];
  const std::string_view channel = ch->type == REDIS_REPLY_STRING ? std::string_view(ch->str, ch->len) : "";
  if (type == "subscribe") {
    if (++confirmations_ == 2 && setup_done_) {
      auto done = std::move(setup_done_);
      setup_done_ = nullptr;
      done(true, "");
    }
    return;
  }
  if (type != "message") return;
  if (channel == hb_channel_) {
    last_beat_ = uv_now(loop_);
    const redisReply* p = m->element[2];
    if (p->type == REDIS_REPLY_STRING && p->len > 1 && p->str[0] == 'f') {
      auto it = fences_.find(strtoull(p->str + 1, nullptr, 10));
      if (it != fences_.end()) {
        auto cb = std::move(it->second);
        fences_.erase(it);
        cb(true);
      }
    }
    return;
  }
  if (channel != kInvalidateChannel) return;
  const redisReply* p = m->element[2];
  if (p->type == REDIS_REPLY_NIL) {
    st_.flush_all_total++;
    if (h_.flush_all) h_.flush_all();
    return;
  }
  if (p->type != REDIS_REPLY_ARRAY) return;
  const std::string_view prefix = cfg_.prefix;
  for (size_t i = 0; i < p->elements; ++i) {
    const redisReply* k = p->element[i];
    if (k->type != REDIS_REPLY_STRING) continue;
    const std::string_view key(k->str, k->len);
    if (key.substr(0, prefix.size()) != prefix) continue;
    st_.keys_total++;
    if (h_.key) h_.key(key.substr(prefix.size()));
  }
}

void Invalidation::try_track() {
  if (!sub_ready_ || !data_->ready() || tracking_sent_ || closing_) return;
  if (coherent_ && tracked_data_gen_ == data_->generation() && tracked_sub_gen_ == sub_->generation()) return;
  const uint64_t dgen = data_->generation(), sgen = sub_->generation();
  const std::string id = std::to_string(sub_id_);
  // OFF first: tracking may still be on for an earlier subscriber (a prefix
  // cannot be added twice); on a connection without tracking it is a no-op.
  data_->command({"CLIENT", "TRACKING", "off"}, [](const Reply&) {});
  tracking_sent_ = true;
  const bool sent = data_->command(
      {"CLIENT", "TRACKING", "on", "REDIRECT", id, "BCAST", "PREFIX", cfg_.prefix, "NOLOOP"},
      [this, dgen, sgen](const Reply& r) {
        tracking_sent_ = false;
        if (r.failed()) return;  // the data link's on_down handles it
        if (r.is_error()) {
          const std::string e = "CLIENT TRACKING failed: " + r.error() + " (needs Redis 6 or later)";
          if (e != last_error_) spdlog::error("redis: {}; other hosts' writes cannot invalidate this host", e);
          last_error_ = e;
          return;  // retried by the heartbeat timer
        }
        if (dgen != data_->generation() || sgen != sub_->generation() || !sub_ready_) return try_track();
        tracked_data_gen_ = dgen;
        tracked_sub_gen_ = sgen;
        coherent_ = true;
        last_beat_ = uv_now(loop_);
        last_error_.clear();
        st_.established_total++;
        spdlog::info("redis: receiving invalidations for keys under '{}'", printable(cfg_.prefix));
        if (h_.coherent) h_.coherent();
      });
  if (!sent) tracking_sent_ = false;
}

void Invalidation::lose(const std::string& why) {
  if (!coherent_) return;
  coherent_ = false;
  st_.lost_total++;
  spdlog::warn("redis: invalidations stopped ({})", why);
  fail_fences();
  if (h_.lost) h_.lost(why);
}

void Invalidation::fence(std::function<void(bool)> cb) {
  if (!coherent_) return cb(false);
  const uint64_t id = next_fence_++;
  if (!data_->command({"PUBLISH", hb_channel_, "f" + std::to_string(id)}, [](const Reply&) {})) return cb(false);
  fences_[id] = std::move(cb);
}

void Invalidation::fail_fences() {
  auto fs = std::move(fences_);
  fences_.clear();
  for (auto& [id, cb] : fs) cb(false);
}

void Invalidation::on_beat(uv_timer_t* t) {
  auto* self = static_cast<Invalidation*>(t->data);
  if (!self->coherent_) {
    self->try_track();
    return;
  }
  const uint64_t now = uv_now(self->loop_);
  if (now - self->last_beat_ > kMissedBeats * self->cfg_.heartbeat_ms) {
    self->st_.heartbeat_misses_total++;
    const std::string why = "no heartbeat on the invalidation connection for " + std::to_string(now - self->last_beat_) +
                            " ms";
    self->lose(why);
    self->sub_->fail(why);
    return;
  }
  self->data_->command({"PUBLISH", self->hb_channel_, "1"}, [](const Reply&) {});
}

InvalidationStats Invalidation::stats() const {
  InvalidationStats s = st_;
  s.coherent = coherent_;
  return s;
}

}  // namespace nearcache::redis
