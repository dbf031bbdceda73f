// daemon/redis/tier.cc — see tier.h.
#include "redis/tier.h"

#include <spdlog/spdlog.h>

#include "redis/tls.h"
#include "redis/util.h"

namespace nearcache::redis {

std::unique_ptr<Tier> Tier::create(uv_loop_t* loop, const Config& cfg, TableHooks hooks, std::string* err) {
  Endpoint ep;
  std::vector<HostPort> sentinels;
  if (!validate(cfg, &ep, &sentinels, err)) return nullptr;
  std::shared_ptr<const TlsClient> tls;
  if (ep.tls && !(tls = tls_client(cfg, err))) return nullptr;
  std::unique_ptr<Sentinels> s;
  if (!sentinels.empty()) {
    SentinelOptions so;
    so.sentinels = sentinels;
    so.master = cfg.sentinel_master;
    so.tls = ep.tls;
    so.timeout_ms = cfg.sentinel_timeout_ms;
    if (!cfg.sentinel_password_file.empty()) {
      if (!read_password_file(cfg.sentinel_password_file, &so.password, err, "redis_sentinel_password_file"))
        return nullptr;
      so.has_password = true;
    }
    so.link.reconnect_min_ms = cfg.reconnect_min_ms;
    so.link.reconnect_max_ms = cfg.reconnect_max_ms;
    so.link.jitter_percent = cfg.reconnect_jitter_percent;
    so.link.command_timeout_ms = cfg.command_timeout_ms;
    so.link.tls = tls;
    s = std::make_unique<Sentinels>(loop, std::move(so));
  }
  auto t = std::unique_ptr<Tier>(new Tier(loop, cfg, ep, std::move(hooks), std::move(s)));
  t->link_->set_tls(tls);
  t->inval_->link().set_tls(tls);
  return t;
}

std::shared_ptr<const TlsClient> Tier::tls_client(const Config& cfg, std::string* err) {
  TlsOptions o;
  o.ca_file = cfg.tls_ca_file;
  o.cert_file = cfg.tls_cert_file;
  o.key_file = cfg.tls_key_file;
  o.server_name = cfg.tls_server_name;
  o.verify = cfg.tls_verify;
  return TlsClient::create(o, err);
}

bool Tier::reload_tls(std::string* err) {
  if (!ep_.tls) return true;
  auto tls = tls_client(cfg_, err);
  if (!tls) return false;
  link_->set_tls(tls);
  inval_->link().set_tls(tls);
  if (sentinels_) sentinels_->set_tls(tls);
  return true;
}

bool Tier::reload_sentinel_password(const std::string& path, std::string* err) {
  if (!sentinels_ || path.empty()) return true;
  std::string pw;
  if (!read_password_file(path, &pw, err, "redis_sentinel_password_file")) return false;
  sentinels_->set_password(pw);
  return true;
}

Tier::Tier(uv_loop_t* loop, const Config& cfg, const Endpoint& ep, TableHooks hooks, std::unique_ptr<Sentinels> s)
    : loop_(loop), cfg_(cfg), ep_(ep), hooks_(std::move(hooks)), sentinels_(std::move(s)) {
  LinkOptions o;
  if (sentinels_) {
    // Both links (the invalidation link copies these options) ask the
    // Sentinels before every attempt, then check ROLE.
    o.locate = [this](LinkOptions::Located done) { sentinels_->locate(std::move(done)); };
    o.locate_what = "asking the Sentinels for master '" + cfg.sentinel_master + "'";
    o.require_master = true;
    sentinels_->on_master([this](const HostPort& m, bool from_switch) { master_moved(m, from_switch); });
  }
  o.name = "data";
  o.connect_timeout_ms = cfg.connect_timeout_ms;
  o.command_timeout_ms = cfg.command_timeout_ms;
  o.reconnect_min_ms = cfg.reconnect_min_ms;
  o.reconnect_max_ms = cfg.reconnect_max_ms;
  o.jitter_percent = cfg.reconnect_jitter_percent;
  // No reply is larger than the largest value relayed (the scripts refuse
  // bigger ones in Redis) plus room for SCAN pages: a Redis that answers more
  // is cut off before the reply is buffered.
  o.max_reply_bytes = relay_max_stored(cfg) + (4ull << 20);
  link_ = std::make_unique<Link>(loop, ep, o);
  scripts_ = std::make_unique<Scripts>(link_.get());
  queue_ = std::make_unique<WriteBehind>(loop, link_.get(), scripts_.get(), cfg);
  reads_ = std::make_unique<ReadThrough>(link_.get(), queue_.get(), cfg);
  atomics_ = std::make_unique<Atomics>(loop, link_.get(), scripts_.get(), queue_.get(), cfg);
  Invalidation::Handlers h;
  h.key = [this](std::string_view key) {
    reads_->invalidate(key);
    if (hooks_.drop) hooks_.drop(key);
    atomics_->wake(key);
  };
  h.flush_all = [this] { repair_->flush(); };
  h.lost = [this](const std::string&) { repair_->lost(); };
  h.coherent = [this] { repair_->coherent(); };
  inval_ = std::make_unique<Invalidation>(loop, link_.get(), ep, cfg, std::move(h));
  Repair::Hooks rh;
  rh.drop_all = [this](const char* why) { drop_all(why); };
  rh.drop_slots = [this](const std::vector<bool>& slots) {
    reads_->invalidate_all();
    if (hooks_.drop_slots) hooks_.drop_slots(slots);
  };
  rh.suspend = [this](bool on) {
    if (hooks_.suspend) hooks_.suspend(on);
  };
  rh.invalidate_reads = [this] { reads_->invalidate_all(); };
  repair_ = std::make_unique<Repair>(loop, link_.get(), inval_.get(), cfg, std::move(rh));
  queue_->set_on_refused([this](std::string_view key) {  // write_behind.h: Refusals
    reads_->invalidate(key);
    if (hooks_.drop) hooks_.drop(key);
  });
  reads_->set_coherent([this] { return inval_->coherent(); });
  reads_->set_install([this](std::string_view key, const Fetched& f) {
    if (f.kind != Fetched::Kind::hit) {
      if (hooks_.install_negative) hooks_.install_negative(key, f.expiry_ms);
    } else if (hooks_.install) {
      hooks_.install(key, f.value, f.flags, f.expiry_ms);
    }
    if (!f.queued && hooks_.synced) hooks_.synced(key);  // from Redis: a warm restart may keep it
  });
}

Tier::~Tier() {
  if (started_ && !closing_) spdlog::critical("redis tier destroyed without shutdown()");
}

void Tier::start() {
  if (started_) return;
  started_ = true;
  if (sentinels_)
    spdlog::info("redis: tier for master '{}' of the Sentinels {} ({}, prefix '{}')", cfg_.sentinel_master,
                 cfg_.sentinels, ep_.masked(), printable(cfg_.prefix));
  else
    spdlog::info("redis: tier for {} (prefix '{}')", ep_.masked(), printable(cfg_.prefix));
  if (ep_.tls && !cfg_.tls_verify)
    spdlog::warn("redis: redis_tls_verify is off: Redis's certificate and name are not checked, so anyone on the "
                 "path can pose as Redis; use it for tests only");
  if (sentinels_) sentinels_->start();
  link_->start();
  inval_->start();
}

// The master moved: a link on another address leaves it (the data and
// invalidation links must be on one server: CLIENT TRACKING REDIRECT names a
// connection of that server; losing the invalidation link flushes the table
// as any loss does); +switch-master also wakes links waiting in backoff.
void Tier::master_moved(const HostPort& m, bool from_switch) {
  for (Link* l : {link_.get(), &inval_->link()}) {
    const LinkState st = l->state();
    if (st == LinkState::backoff) {
      if (from_switch) l->reconnect_now();
    } else if (st == LinkState::connecting || st == LinkState::handshaking || st == LinkState::ready) {
      if (l->endpoint().host != m.host || l->endpoint().port != m.port)
        l->fail("the Sentinels moved master '" + cfg_.sentinel_master + "' to " + m.where());
    }
  }
}

void Tier::drop_all(const char* why) {
  reads_->invalidate_all();
  local_flushes_++;
  if (hooks_.drop_all) hooks_.drop_all(why);
}

void Tier::shutdown(std::function<void(uint64_t)> done) {
  if (closing_) return;
  closing_ = true;
  auto finish = [this, done = std::move(done)](uint64_t left) {
    atomics_->close();
    auto pending = std::make_shared<int>(sentinels_ ? 5 : 4);
    auto one = [pending, left, done] {
      if (--*pending == 0) done(left);
    };
    repair_->close(one);
    queue_->close(one);
    inval_->close(one);
    link_->close(one);
    if (sentinels_) sentinels_->close(one);
  };
  if (!started_) {
    started_ = true;
    return finish(queue_->stats().depth);
  }
  queue_->drain(mono_ms() + cfg_.drain_timeout_ms, std::move(finish));
}

Enqueued Tier::set(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry_ms) {
  reads_->invalidate(key);
  return queue_->set(key, value, flags, expiry_ms);
}

Enqueued Tier::del(std::string_view key) {
  reads_->invalidate(key);
  return queue_->del(key);
}

Enqueued Tier::touch(std::string_view key, uint64_t expiry_ms) {
  reads_->invalidate(key);
  return queue_->touch(key, expiry_ms);
}

Enqueued Tier::clear(std::string_view prefix) {
  reads_->invalidate_all();
  return queue_->clear(prefix);
}

Lookup Tier::get(std::string_view key, Fetched* now, FetchFn done) { return reads_->get(key, now, std::move(done)); }

bool Tier::add(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry_ms, AtomicFn cb) {
  reads_->invalidate(key);
  return atomics_->add(key, value, flags, expiry_ms, std::move(cb));
}

bool Tier::incr(std::string_view key, __int128 delta, AtomicFn cb) {
  reads_->invalidate(key);
  return atomics_->incr(key, delta, std::move(cb));
}

bool Tier::lease(std::string_view key, uint64_t token, uint64_t lease_ms, AtomicFn cb) {
  return atomics_->lease(key, token, lease_ms, std::move(cb));
}

bool Tier::release(std::string_view key, uint64_t token, AtomicFn cb) {
  return atomics_->release(key, token, std::move(cb));
}

uint64_t Tier::wait_lease(std::string_view key, uint64_t token, uint64_t lease_ms, uint64_t deadline_ms, AtomicFn cb) {
  return atomics_->wait_lease(key, token, lease_ms, deadline_ms, std::move(cb));
}

void Tier::cancel_wait(uint64_t id) { atomics_->cancel_wait(id); }

void Tier::wake_lease_waiters(std::string_view key) { atomics_->wake(key); }

void Tier::set_password(const std::string& password) {
  ep_.password = password;
  ep_.has_password = true;
  link_->set_password(password);
  inval_->link().set_password(password);
}

TierStatus Tier::status() const {
  TierStatus s;
  s.data = link_->status();
  s.invalidation = static_cast<const Invalidation&>(*inval_).link().status();
  s.coherent = inval_->coherent();
  s.degraded = !link_->ready() && cfg_.down == DownPolicy::local;
  s.queue = queue_->stats();
  s.reads = reads_->stats();
  s.inval = inval_->stats();
  s.atomics = atomics_->stats();
  s.repair = repair_->stats();
  s.local_flushes_total = local_flushes_;
  s.local_decisions_total = local_decisions_;
  s.url = ep_.masked();
  if (sentinels_) {
    s.sentinel = sentinels_->status();
    s.master = link_->endpoint().host.empty() ? "" : link_->endpoint().where();
  }
  return s;
}

}  // namespace nearcache::redis
