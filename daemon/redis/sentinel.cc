// daemon/redis/sentinel.cc — see sentinel.h.
#include "redis/sentinel.h"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <spdlog/spdlog.h>

namespace nearcache::redis {

namespace {
constexpr std::string_view kSwitchChannel = "+switch-master";

bool parse_port(std::string_view s, uint16_t* out) {
  if (s.empty() || s.size() > 5) return false;
  unsigned v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + unsigned(c - '0');
  }
  if (v == 0 || v > 65535) return false;
  *out = uint16_t(v);
  return true;
}
}  // namespace

Sentinels::Sentinels(uv_loop_t* loop, SentinelOptions opts) : loop_(loop), opts_(std::move(opts)) {
  order_ = opts_.sentinels;
  st_.master_name = opts_.master;
  uv_timer_init(loop_, &step_);
  step_.data = this;
  handles_ = 1;

  // The subscriber: one Sentinel at a time, the next one after each failure.
  LinkOptions o = opts_.link;
  o.name = "sentinel";
  o.require_master = false;
  o.quiet = false;
  o.connect_timeout_ms = opts_.timeout_ms;
  o.max_reply_bytes = 1 << 20;
  o.locate_what = "choosing a Sentinel";
  o.locate = [this](LinkOptions::Located done) {
    const HostPort& s = order_[sub_index_ % order_.size()];
    done(true, s.host, s.port, "");
  };
  sub_ = std::make_unique<Link>(loop_, endpoint_of(order_[0]), o);
  sub_->add_setup([this](Link& l, Link::Done done) {
    auto confirmed = std::make_shared<Link::Done>(std::move(done));
    if (!l.subscribe({kSwitchChannel}, [this, confirmed](const redisReply* m) {
          if (m->type == REDIS_REPLY_ARRAY && m->elements >= 1 && str_at(m, 0) == "subscribe") {
            if (*confirmed) {
              auto d = std::move(*confirmed);
              *confirmed = nullptr;
              d(true, "");
            }
            return;
          }
          on_switch(m);
        }))
      (*confirmed)(false, "cannot send SUBSCRIBE +switch-master");
  });
  sub_->on_up([this] { st_.subscribed = true; });
  sub_->on_down([this](const std::string&) { st_.subscribed = false; });
  sub_->on_fail([this](const std::string&) { sub_index_++; });
}

Sentinels::~Sentinels() {
  if (handles_ != 0 || !closing_.empty())
    spdlog::critical("redis sentinel: destroyed while open; call close() and run the loop first");
}

Endpoint Sentinels::endpoint_of(const HostPort& s) const {
  Endpoint e = opts_.auth;
  e.host = s.host;
  e.port = s.port;
  return e;
}

void Sentinels::set_tls(std::shared_ptr<const TlsClient> tls) {
  opts_.link.tls = tls;
  sub_->set_tls(std::move(tls));
}

void Sentinels::start() { sub_->start(); }

void Sentinels::close(std::function<void()> closed) {
  if (closed_flag_) return;
  closed_flag_ = true;
  closed_ = std::move(closed);
  querying_ = false;
  ++try_token_;
  auto waiters = std::move(waiters_);
  waiters_.clear();
  for (auto& w : waiters) w(false, "", 0, "closing");
  if (query_) retire(std::move(query_));
  retire(std::move(sub_));
  uv_timer_stop(&step_);
  uv_close(reinterpret_cast<uv_handle_t*>(&step_), [](uv_handle_t* h) {
    auto* self = static_cast<Sentinels*>(h->data);
    self->handles_--;
    if (self->closing_.empty() && self->closed_) {
      auto fn = std::move(self->closed_);
      fn();
    }
  });
}

void Sentinels::retire(std::unique_ptr<Link> l) {
  Link* raw = l.get();
  closing_.push_back(std::move(l));
  raw->close([this, raw] {
    closing_.erase(std::remove_if(closing_.begin(), closing_.end(), [raw](const auto& p) { return p.get() == raw; }),
                   closing_.end());
    if (closed_flag_ && closing_.empty() && handles_ == 0 && closed_) {
      auto fn = std::move(closed_);
      fn();
    }
  });
}

// ------------------------------------------------------------ queries

void Sentinels::locate(LinkOptions::Located done) {
  if (closed_flag_) return;
  waiters_.push_back(std::move(done));
  if (querying_) return;
  querying_ = true;
  st_.queries_total++;
  errors_.clear();
  ask(0);
}

void Sentinels::ask(size_t i) {
  asking_ = i;
  outcome_ = Outcome::none;
  const uint64_t token = ++try_token_;
  LinkOptions o;
  o.name = "sentinel query";
  o.connect_timeout_ms = opts_.timeout_ms;
  o.command_timeout_ms = opts_.timeout_ms;
  o.reconnect_min_ms = o.reconnect_max_ms = 3600000;  // retired before it would retry
  o.tls = opts_.link.tls;
  o.max_reply_bytes = 64 << 10;
  o.quiet = true;
  query_ = std::make_unique<Link>(loop_, endpoint_of(order_[i]), o);
  // Every outcome is handled from the loop (step_), never inside the Link.
  auto settle = [this, token](Outcome out, const std::string& why) {
    if (token != try_token_ || outcome_ != Outcome::none) return;
    outcome_ = out;
    outcome_why_ = why;
    uv_timer_start(&step_, on_step, 0, 0);
  };
  query_->on_fail([settle](const std::string& why) { settle(Outcome::failed, why); });
  Link* l = query_.get();
  query_->on_up([this, l, settle] {
    const bool sent =
        l->command({"SENTINEL", "get-master-addr-by-name", opts_.master}, [this, settle](const Reply& r) {
          if (r.is_error()) return settle(Outcome::failed, r.error());
          if (r.r->type == REDIS_REPLY_NIL)
            return settle(Outcome::failed, "does not know a master named '" + opts_.master + "'");
          uint16_t port = 0;
          const std::string_view host = str_at(r.r, 0);
          if (r.r->type != REDIS_REPLY_ARRAY || r.r->elements != 2 || host.empty() || !parse_port(str_at(r.r, 1), &port))
            return settle(Outcome::failed, "unexpected answer to SENTINEL get-master-addr-by-name");
          answer_.host = std::string(host);
          answer_.port = port;
          settle(Outcome::answered, "");
        });
    if (!sent) settle(Outcome::failed, "cannot send SENTINEL get-master-addr-by-name");
  });
  query_->start();
  if (outcome_ == Outcome::none) uv_timer_start(&step_, on_step, opts_.timeout_ms, 0);
}

void Sentinels::on_step(uv_timer_t* t) {
  auto* self = static_cast<Sentinels*>(t->data);
  if (!self->querying_) return;
  switch (self->outcome_) {
    case Outcome::answered: return self->finish(true, "");
    case Outcome::failed: return self->next(self->outcome_why_);
    case Outcome::none: return self->next("no answer within " + std::to_string(self->opts_.timeout_ms) +
                                          " ms (redis_sentinel_timeout_ms)");
  }
}

void Sentinels::next(const std::string& why) {
  errors_ += (errors_.empty() ? "" : "; ") + order_[asking_].where() + ": " + why;
  ++try_token_;
  retire(std::move(query_));
  if (asking_ + 1 < order_.size()) return ask(asking_ + 1);
  finish(false, errors_);
}

void Sentinels::finish(bool ok, const std::string& why) {
  querying_ = false;
  ++try_token_;
  if (query_) retire(std::move(query_));
  auto waiters = std::move(waiters_);
  waiters_.clear();
  if (!ok) {
    st_.query_failures_total++;
    st_.last_error = "no Sentinel named the master '" + opts_.master + "' (" + why + ")";
    for (auto& w : waiters) w(false, "", 0, st_.last_error);
    return;
  }
  // The guide: the Sentinel that answered is asked first from now on.
  const HostPort who = order_[asking_];
  order_.erase(order_.begin() + long(asking_));
  order_.insert(order_.begin(), who);
  st_.last_sentinel = who.where();
  st_.last_error.clear();
  const HostPort m = answer_;
  for (auto& w : waiters) w(true, m.host, m.port, "");
  learned(m, false);
}

// ------------------------------------------------------------ the master

void Sentinels::learned(const HostPort& m, bool from_switch) {
  if (closed_flag_) return;
  const bool changed = !(m == master_);
  const bool had = !master_.host.empty();
  if (changed) {
    if (had) {
      st_.failovers_total++;
      spdlog::warn("redis: the Sentinels moved master '{}' from {} to {}{}", opts_.master, master_.where(), m.where(),
                   from_switch ? " (+switch-master)" : "");
    } else {
      spdlog::info("redis: the Sentinels name {} as master '{}'", m.where(), opts_.master);
    }
    master_ = m;
    st_.master = m.where();
  }
  if (on_master_ && ((changed && had) || from_switch)) on_master_(m, from_switch);
}

void Sentinels::on_switch(const redisReply* m) {
  // ["message", "+switch-master", "<name> <old-ip> <old-port> <new-ip> <new-port>"]
  if (m->type != REDIS_REPLY_ARRAY || m->elements < 3 || str_at(m, 0) != "message") return;
  const std::string_view payload = str_at(m, 2);
  std::vector<std::string_view> w;
  size_t i = 0;
  while (i < payload.size()) {
    const size_t j = std::min(payload.find(' ', i), payload.size());
    if (j > i) w.push_back(payload.substr(i, j - i));
    i = j + 1;
  }
  HostPort to;
  if (w.size() != 5 || w[0] != opts_.master || !parse_port(w[4], &to.port)) return;
  to.host = std::string(w[3]);
  st_.switch_messages_total++;
  learned(to, true);
}

SentinelStatus Sentinels::status() const { return st_; }

}  // namespace nearcache::redis
