// daemon/redis/tier.cc — see tier.h.
#include "redis/tier.h"

#include <spdlog/spdlog.h>

#include <hiredis/hiredis.h>

#include <algorithm>
#include <utility>

#include "redis/slots.h"
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
    so.auth.tls = ep.tls;
    so.timeout_ms = cfg.sentinel_timeout_ms;
    if (!cfg.sentinel_password_file.empty()) {
      if (!read_password_file(cfg.sentinel_password_file, &so.auth.password, err, "redis_sentinel_password_file"))
        return nullptr;
      so.auth.has_password = true;
    }
    so.link.reconnect_min_ms = cfg.reconnect_min_ms;
    so.link.reconnect_max_ms = cfg.reconnect_max_ms;
    so.link.jitter_percent = cfg.reconnect_jitter_percent;
    so.link.command_timeout_ms = cfg.command_timeout_ms;
    so.link.tls = tls;
    s = std::make_unique<Sentinels>(loop, std::move(so));
  }
  auto t = std::unique_ptr<Tier>(new Tier(loop, cfg, ep, std::move(hooks), std::move(s)));
  t->set_tls(tls);
  if (sentinels.empty() && !ep.unix_socket && cfg.cluster != "off" && cfg.shard_home_slot < 0) {
    std::vector<HostPort> seeds{HostPort{ep.host, ep.port}}, more;
    if (!cfg.cluster_seeds.empty() && !parse_host_ports(cfg.cluster_seeds, 6379, "redis_cluster_seeds", &more, err))
      return nullptr;
    for (auto& m : more)
      if (!(m == seeds[0])) seeds.push_back(m);
    t->make_control(seeds);
  }
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
  set_tls(tls);
  if (sentinels_) sentinels_->set_tls(tls);
  return true;
}

void Tier::set_tls(std::shared_ptr<const TlsClient> tls) {
  tls_ = tls;
  link_->set_tls(tls);
  inval_->link().set_tls(tls);
  if (control_) control_->set_tls(tls);
  if (cluster_) cluster_->set_tls(tls);
}

// ---------------------------------------------------------------- Redis Cluster

// The control link: before every attempt the next seed (redis_url's node,
// redis_cluster_seeds, then the masters of the last map); on every
// connection INFO cluster and, on a cluster node, the slot map.
void Tier::make_control(const std::vector<HostPort>& seeds) {
  seeds_ = seeds;
  deciding_ = true;
  LinkOptions o = link_->options();
  o.name = "cluster control";
  o.locate = [this](LinkOptions::Located done) {
    std::vector<HostPort> all = seeds_;
    if (cluster_)
      for (const auto& m : cluster_->masters())
        if (std::find(all.begin(), all.end(), m) == all.end()) all.push_back(m);
    const HostPort& h = all[next_seed_++ % all.size()];
    done(true, h.host, h.port, "");
  };
  o.locate_what = "choosing a cluster seed";
  control_ = std::make_unique<Link>(loop_, ep_, o);
  control_->add_setup([this](Link& l, Link::Done done) {
    const bool sent = l.command({"INFO", "cluster"}, [this, &l, done](const Reply& r) {
      if (r.failed()) return done(false, "INFO cluster failed: " + r.error());
      // An ACL user without INFO: not a cluster as far as auto can tell.
      const bool on = !r.is_error() && (r.r->type == REDIS_REPLY_STRING || r.r->type == REDIS_REPLY_STATUS) &&
                      cluster_enabled(std::string_view(r.r->str, r.r->len));
      if (r.is_error() && !cluster_)
        spdlog::warn("redis: INFO cluster refused ({}): taken as one server (set redis_cluster = off to skip "
                     "the question)", r.error());
      if (on) return read_map(l, done);
      if (cluster_ || cfg_.cluster == "on")
        return done(false, l.endpoint().where() + " is not a Redis Cluster node (cluster_enabled:0) and "
                               "redis_cluster = " + cfg_.cluster);
      done(true, "");
      if (deciding_) {
        // One server: the tier runs on its own links; the control link is done.
        deciding_ = false;
        spdlog::info("redis: {} is not a cluster node: one server", l.endpoint().where());
        link_->start();
        inval_->start();
        control_closing_ = true;
        control_->close([this] {
          control_closed_ = true;
          if (control_wait_) std::exchange(control_wait_, nullptr)();
        });
      }
    });
    if (!sent) done(false, "cannot send INFO cluster");
  });
}

// CLUSTER SHARDS (Redis 7), else CLUSTER SLOTS; the map goes to the cluster.
void Tier::read_map(Link& l, Link::Done done) {
  auto use = [this, done](const SlotMap& map) {
    done(true, "");
    if (!cluster_) cluster_found(map);
    else cluster_->apply(map);
  };
  const bool sent = l.command({"CLUSTER", "SHARDS"}, [&l, done, use](const Reply& r) {
    SlotMap map;
    std::string err;
    const Endpoint& at = l.endpoint();
    if (!r.is_error() && parse_cluster_shards(r.r, at.host, at.tls, &map, &err) && map.covered()) return use(map);
    if (r.failed()) return done(false, r.error());
    const bool sent2 = l.command({"CLUSTER", "SLOTS"}, [&l, done, use](const Reply& r2) {
      SlotMap m2;
      std::string e2;
      if (r2.is_error()) return done(false, "CLUSTER SLOTS failed: " + r2.error());
      if (!parse_cluster_slots(r2.r, l.endpoint().host, &m2, &e2)) return done(false, e2);
      if (!m2.covered()) return done(false, "the cluster serves no slot yet");
      use(m2);
    });
    if (!sent2) done(false, "cannot send CLUSTER SLOTS");
  });
  if (!sent) done(false, "cannot send CLUSTER SHARDS");
}

void Tier::cluster_found(const SlotMap& map) {
  deciding_ = false;
  spdlog::info("redis: Redis Cluster of {} master(s), {} of {} slots served", map.masters.size(), map.covered(),
               kSlots);
  auto refresh = [this] {
    if (!control_ || !control_->ready()) return;  // it reconnects (next seed) and reads the map then
    read_map(*control_, [this](bool ok, const std::string& why) {
      if (!ok) control_->fail("slot map refresh: " + why);
    });
  };
  cluster_ = std::make_unique<Cluster>(
      loop_, cfg_, hooks_,
      [this](const HostPort& m, int home, TableHooks h) { return make_part(m, home, std::move(h)); },
      std::move(refresh));
  // A table adopted at a warm restart was seeded (main.cc) for this tier's
  // own repair, which never runs on a cluster: the parts repair against the
  // previous daemon's per-master snapshots instead (Cluster::set_restart).
  // Without them (or with redis_stale_grace_ms 0) it is dropped and served
  // again; each part then trusts its slots from its own first coherence on.
  if (repair_->stats().suspended) cluster_restart_.serve_until_ms = 0;
  repair_->unseed();
  if (cluster_restart_.saved.empty() || cfg_.stale_grace_ms == 0) {
    cluster_restart_.saved.clear();
    drop_all("on a Redis Cluster, entries from before the slot map are not trusted without a saved snapshot");
    if (hooks_.suspend) hooks_.suspend(false);
  }
  cluster_->set_restart(std::move(cluster_restart_));
  cluster_->apply(map);
  // What was queued before the answer goes to the masters.
  queue_->hand_over([this](HandedOp&& op) { cluster_->adopt(std::move(op)); });
}

std::unique_ptr<Tier> Tier::make_part(const HostPort& m, int home_slot, TableHooks hooks) {
  Config c = cfg_;
  c.cluster = "off";
  c.shard_home_slot = home_slot < 0 ? 0 : home_slot;
  Endpoint ep = ep_;
  ep.host = m.host;
  ep.port = m.port;
  ep.db = 0;  // a cluster has database 0 only
  PartOf part;
  Cluster* cl = cluster_.get();
  part.error_reply = [cl](std::string_view e) { cl->error_reply(e); };
  // Its repair reads the counters of the slots its master serves now.
  auto self = std::make_shared<const Tier*>(nullptr);
  part.owned_slots = [cl, self] { return cl->owned_by(*self); };
  auto t = std::unique_ptr<Tier>(new Tier(loop_, c, ep, std::move(hooks), nullptr, std::move(part)));
  *self = t.get();
  t->set_tls(tls_);
  return t;
}

bool Tier::reload_sentinel_password(const std::string& path, std::string* err) {
  if (!sentinels_ || path.empty()) return true;
  std::string pw;
  if (!read_password_file(path, &pw, err, "redis_sentinel_password_file")) return false;
  sentinels_->set_password(pw);
  return true;
}

Tier::Tier(uv_loop_t* loop, const Config& cfg, const Endpoint& ep, TableHooks hooks, std::unique_ptr<Sentinels> s,
           PartOf part)
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
  o.on_error_reply = std::move(part.error_reply);
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
  rh.owned_slots = std::move(part.owned_slots);
  repair_ = std::make_unique<Repair>(loop, link_.get(), inval_.get(), cfg, std::move(rh));
  queue_->set_on_refused([this](std::string_view key) {  // write_behind.h: Refusals
    reads_->invalidate(key);
    if (hooks_.drop) hooks_.drop(key);
  });
  queue_->set_on_acked([this](std::string_view key, uint64_t item_id) {
    if (hooks_.acked) hooks_.acked(key, item_id);
  });
  queue_->set_on_fill_refused([this](std::string_view key, uint64_t item_id) {  // write_behind.h: Lease fills
    reads_->invalidate(key);
    if (hooks_.fill_refused) hooks_.fill_refused(key, item_id);
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
  if (control_) return control_->start();  // decides between one server and a cluster
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

void Tier::shutdown(std::function<void(uint64_t)> done) { shutdown_until(mono_ms() + cfg_.drain_timeout_ms, std::move(done)); }

void Tier::shutdown_until(uint64_t deadline_ms, std::function<void(uint64_t)> done) {
  if (closing_) return;
  closing_ = true;
  auto finish = [this, done = std::move(done)](uint64_t left) {
    atomics_->close();
    auto pending = std::make_shared<int>(4 + (sentinels_ ? 1 : 0) + (control_ ? 1 : 0));
    auto one = [pending, left, done] {
      if (--*pending == 0) done(left);
    };
    repair_->close(one);
    queue_->close(one);
    inval_->close(one);
    link_->close(one);
    if (sentinels_) sentinels_->close(one);
    if (control_ && control_closed_) one();
    else if (control_ && control_closing_) control_wait_ = one;  // closing since one server was decided
    else if (control_) control_->close(one);
  };
  if (!started_) {
    started_ = true;
    return finish(queue_->stats().depth);
  }
  if (cluster_) {
    // The parts drain in parallel; this tier's own queue was handed to them.
    return cluster_->shutdown(deadline_ms, [finish](uint64_t left) mutable { finish(left); });
  }
  queue_->drain(deadline_ms, std::move(finish));
}

Enqueued Tier::set(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry_ms,
                   uint64_t item_id) {
  if (cluster_) return cluster_->set(key, value, flags, expiry_ms, item_id);
  reads_->invalidate(key);
  return queue_->set(key, value, flags, expiry_ms, item_id);
}

Enqueued Tier::fill(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry_ms,
                    uint64_t item_id, int64_t expected) {
  if (cluster_) return cluster_->fill(key, value, flags, expiry_ms, item_id, expected);
  reads_->invalidate(key);
  return queue_->fill(key, value, flags, expiry_ms, item_id, expected);
}

int64_t Tier::fill_base(std::string_view key) {
  if (cluster_) return cluster_->fill_base(key);
  return repair_->base_counter(key_slot(cfg_.prefix + std::string(key)));
}

Enqueued Tier::del(std::string_view key) {
  if (cluster_) return cluster_->del(key);
  reads_->invalidate(key);
  return queue_->del(key);
}

Enqueued Tier::touch(std::string_view key, uint64_t expiry_ms) {
  if (cluster_) return cluster_->touch(key, expiry_ms);
  reads_->invalidate(key);
  return queue_->touch(key, expiry_ms);
}

Enqueued Tier::clear(std::string_view prefix) {
  if (cluster_) return cluster_->clear(prefix);
  reads_->invalidate_all();
  return queue_->clear(prefix);
}

Enqueued Tier::clear_match(std::string_view pattern) {
  if (cluster_) return cluster_->clear_match(pattern);
  reads_->invalidate_all();
  return queue_->clear(pattern, true);
}

Lookup Tier::get(std::string_view key, Fetched* now, FetchFn done) {
  if (cluster_) return cluster_->get(key, now, std::move(done));
  return reads_->get(key, now, std::move(done));
}

bool Tier::add(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry_ms, AtomicFn cb) {
  if (cluster_) return cluster_->add(key, value, flags, expiry_ms, std::move(cb));
  reads_->invalidate(key);
  return atomics_->add(key, value, flags, expiry_ms, std::move(cb));
}

bool Tier::incr(std::string_view key, __int128 delta, AtomicFn cb) {
  if (cluster_) return cluster_->incr(key, delta, std::move(cb));
  reads_->invalidate(key);
  return atomics_->incr(key, delta, std::move(cb));
}

bool Tier::replace(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry_ms, AtomicFn cb) {
  if (cluster_) return cluster_->replace(key, value, flags, expiry_ms, std::move(cb));
  reads_->invalidate(key);
  return atomics_->replace(key, value, flags, expiry_ms, std::move(cb));
}

bool Tier::pttl(std::string_view key, AtomicFn cb) {
  if (cluster_) return cluster_->pttl(key, std::move(cb));
  return atomics_->pttl(key, std::move(cb));
}

bool Tier::lock(LockOp op, std::string_view name, std::string_view token, uint64_t ms, uint64_t max_ms, AtomicFn cb) {
  if (cluster_) return cluster_->lock(op, name, token, ms, max_ms, std::move(cb));
  return atomics_->lock(op, name, token, ms, max_ms, std::move(cb));
}

bool Tier::lease(std::string_view key, uint64_t token, uint64_t lease_ms, AtomicFn cb) {
  if (cluster_) return cluster_->lease(key, token, lease_ms, std::move(cb));
  return atomics_->lease(key, token, lease_ms, std::move(cb));
}

bool Tier::release(std::string_view key, uint64_t token, AtomicFn cb) {
  if (cluster_) return cluster_->release(key, token, std::move(cb));
  return atomics_->release(key, token, std::move(cb));
}

uint64_t Tier::wait_lease(std::string_view key, uint64_t token, uint64_t lease_ms, uint64_t deadline_ms, AtomicFn cb) {
  if (cluster_) return cluster_->wait_lease(key, token, lease_ms, deadline_ms, std::move(cb));
  return atomics_->wait_lease(key, token, lease_ms, deadline_ms, std::move(cb));
}

void Tier::cancel_wait(uint64_t id) {
  if (cluster_) return cluster_->cancel_wait(id);
  atomics_->cancel_wait(id);
}

void Tier::wake_lease_waiters(std::string_view key) {
  if (cluster_) return cluster_->wake_lease_waiters(key);
  atomics_->wake(key);
}

void Tier::set_password(const std::string& password) {
  ep_.password = password;
  ep_.has_password = true;
  link_->set_password(password);
  inval_->link().set_password(password);
  if (control_) control_->set_password(password);
  if (cluster_) cluster_->set_password(password);
}

TierStatus Tier::status() const {
  TierStatus s;
  // Until the seed said one server or cluster, the control link is the data path's state.
  s.data = deciding_ && control_ ? control_->status() : link_->status();
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
  if (cluster_) {
    // The parts' sums replace this tier's own (unused) links and queue.
    TierStatus c;
    cluster_->add_status(&c);
    c.local_decisions_total = s.local_decisions_total;
    c.url = s.url;
    c.cluster = cluster_->status();
    c.local_flushes_total += local_flushes_;
    return c;
  }
  if (sentinels_) {
    s.sentinel = sentinels_->status();
    s.master = link_->endpoint().host.empty() ? "" : link_->endpoint().where();
  }
  return s;
}

}  // namespace nearcache::redis
