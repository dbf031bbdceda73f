// daemon/server/main.cc — nearcached: parse options, adopt or create the table,
// serve until SIGTERM/SIGINT, then leave the table for the next daemon
// (warm_restart) or mark it stopped and remove its names.
//
// Exit status: 0 after a clean stop (and for --help, --print-config...),
// 1 when the daemon cannot start (socket or segment in use, permissions),
// 2 for a bad command line or configuration.
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <spdlog/spdlog.h>

#include "engine/engine.h"
#include "server/log.h"
#include "protocol/metrics.h"
#include "config/options.h"
#include "redis/config.h"
#include "redis/tier.h"
#include "server/repair_file.h"
#include "server/server.h"
#include "writer.h"

using namespace nearcache::daemon;
namespace shm = nearcache::shm;

namespace {
// One metric table as a markdown table.
std::string metric_rows(const MetricSpec* t, size_t n) {
  std::string s = "| metric | type | meaning |\n| --- | --- | --- |\n";
  for (size_t i = 0; i < n; ++i)
    s += std::string("| `") + t[i].name + "` | " + (t[i].kind == MetricKind::counter ? "counter" : "gauge") +
         " | " + t[i].help + " |\n";
  return s;
}

// The metrics section of doc/configuration.md, from the metric tables.
std::string metrics_markdown() {
  return "\n## Status and metrics\n\n"
         "`nearcache status` prints these for people, `--json` for scripts (with `config`, `connections`, "
         "`version`, `pid`, `uptime_s`), `--prometheus` in the Prometheus text format as `nearcache_<name>` "
         "(plus `nearcache_build_info`; `nearcache_up 0` when the daemon cannot be reached). STATUS over the "
         "socket returns the same map. Hits count both the values readers served from shared memory and the "
         "ones the daemon returned.\n\n" +
         metric_rows(metric_table(), kMetricCount) +
         "\nWith `redis_url` set, STATUS also has these, and a `redis` map: `url` (credentials masked), `prefix`, "
         "`state` and `invalidation_state` (`connected`, `reconnecting`, `resolving`, `connecting`, "
         "`handshaking`), `since_unix_ms` (when the data connection last went up or down), `last_error`, "
         "`invalidation_last_error`, `coherent`, `degraded`, `redis_down`, `queue_in_flight`, `last_write_refusal` (the last write Redis refused and why, \"\" = none; "
         "see doc/redis.md), `last_write_refusal_unix_ms`, `tls` (`off`, `on`, or `on, not verified`) and "
         "`tls_verify_error` (the last certificate verification failure); with Sentinel also `sentinel_master` (the name), "
         "`sentinel` (the Sentinel that answered last) and `master` (the server the data connection uses).\n\n" +
         metric_rows(redis_metric_table(), kRedisMetricCount);
}

// A password written into redis_url is readable by whoever can read where it
// was written: say so (redis_password_file is the place for it).
void warn_exposed_password(const Config& cfg, const Invocation& inv) {
  nearcache::redis::Endpoint ep;
  std::string err;
  auto parse = cfg.redis.sentinels.empty() ? nearcache::redis::parse_url : nearcache::redis::parse_sentinel_url;
  if (!parse(cfg.redis.url, &ep, &err, false) || !ep.has_password || ep.password.empty()) return;
  struct stat st;
  if (inv.flags.count("redis_url"))
    spdlog::warn("redis_url carries a password on the command line, where every local user can read it (ps); "
                 "use redis_password_file");
  else if (!cfg.config.empty() && stat(cfg.config.c_str(), &st) == 0 && (st.st_mode & 077))
    spdlog::warn("redis_url carries a password and {} is readable by others than its owner (mode {:04o}); move "
                 "the password to redis_password_file (mode 0600)",
                 cfg.config, unsigned(st.st_mode & 07777));
}

// The daemon's last act on the table (after the heartbeat's last beat, which
// runs through the Redis drain). With warm_restart it stays for the next
// daemon: readers serve it until the heartbeat is older than
// heartbeat_grace_ms. With a Redis tier invalidations stop with this
// process: readers go on serving only if that stays within the staleness
// bound (`serve_on`: invalidations flowed when the drain began, and the
// drain plus heartbeat_grace_ms fit in redis_stale_grace_ms); else it is
// suspended first. Without warm_restart it is stopped and removed.
void release_table(shm::Writer* w, const Config& cfg, bool serve_on = false) {
  if (cfg.warm_restart) {
    if (cfg.redis.enabled() && !serve_on) w->set_suspended(true);
    w->stop();
    w->remove_lock();
  } else {
    w->stop();
    w->remove();
    unlink(repair_file_path(cfg.segment, cfg.posix_shm, cfg.socket).c_str());
  }
}

// Warm restart with a Redis tier: the first repair compares with the last
// snapshot the previous daemon took for the adopted table (repair_file.h;
// on a Redis Cluster each master's part with its master's), and every later
// snapshot is saved for the next daemon.
void hook_repair(nearcache::redis::Tier* tier, shm::Writer* w, const Config& cfg, const SavedSnapshot* saved,
                 uint64_t serve_ms) {
  const std::string path = repair_file_path(cfg.segment, cfg.posix_shm, cfg.socket);
  const shm::StartReport& start = w->start_report();
  nearcache::redis::ClusterRestart cr;
  if (saved && (start.warm || start.copied) && start.kept > 0) {  // adopted, or copied into a new table
    // The restart is a gap in invalidations that began no later than the
    // snapshot: within what is left of the grace (serve_ms, computed before
    // the adoption, which then left the table served), keep serving as
    // readers did all along, as through any gap; the repair drops what changed.
    // A cluster's set seeds the cluster's parts; this tier's own repair then
    // bounds the grace until the seed answers (and, should it be one server
    // now, compares with an empty snapshot: everything is dropped).
    tier->repair().seed(saved->masters.empty() ? saved->snap : nearcache::redis::Snapshot{}, serve_ms);
    cr.saved = saved->masters;
    cr.serve_until_ms = serve_ms ? shm::monotonic_ms() + serve_ms : 0;
    if (serve_ms) {
      spdlog::info("redis: {} adopted entries are served for up to {} ms more (redis_stale_grace_ms since the "
                   "previous daemon's last snapshot) until the repair against it", start.kept, serve_ms);
    } else {
      spdlog::info("redis: {} adopted entries are suspended until the repair against the snapshot of the previous "
                   "daemon", start.kept);
    }
  }
  // Once: a restart then drops what it adopts from Redis.
  auto write = [path, warned = std::make_shared<bool>(false)](const SavedSnapshot& s) {
    std::string why;
    if (!save_repair_file(path, s, &why) && !*warned) {
      *warned = true;
      spdlog::warn("redis: {}; a restarted daemon will drop the entries it adopts", why);
    }
  };
  const uint64_t gen = w->generation();
  const std::string prefix = cfg.redis.prefix;
  auto save = [write, gen, prefix](const nearcache::redis::Snapshot& s) {
    write({gen, prefix, s, {}, shm::monotonic_ms()});
  };
  auto save_set = [write, gen, prefix](const std::vector<nearcache::redis::MasterSnapshot>& set) {
    SavedSnapshot s{gen, prefix, {}, set, UINT64_MAX};
    for (const auto& m : set) s.saved_mono_ms = std::min(s.saved_mono_ms, m.mono_ms);
    write(s);
  };
  tier->repair().set_on_snapshot(std::move(save));
  cr.on_snapshots = std::move(save_set);
  tier->set_cluster_restart(std::move(cr));
}
}  // namespace

int main(int argc, char** argv) {
  Invocation inv;
  std::string err;
  if (!parse_command_line(argc, argv, &inv, &err)) {
    fprintf(stderr, "nearcached: %s (see --help)\n", err.c_str());
    return 2;
  }
  if (inv.help) {
    fputs(help_text(argv[0]).c_str(), stdout);
    return 0;
  }
  if (inv.version) {
    printf("%s\n", kServerName);
    return 0;
  }
  if (inv.print_config_doc) {
    fputs(config_markdown().c_str(), stdout);
    fputs(metrics_markdown().c_str(), stdout);
    return 0;
  }
  Config cfg;
  if (!load_config(inv.flags, &cfg, &err)) {
    fprintf(stderr, "nearcached: %s\n", err.c_str());
    return 2;
  }
  if (inv.print_config) {
    fputs(config_text(cfg).c_str(), stdout);
    return 0;
  }
  setup_logging(cfg.log_level);
  nearcache::redis::Config rcfg = cfg.redis;
  if (cfg.redis.enabled()) {
    if (!rcfg.password_file.empty() &&
        !nearcache::redis::read_password_file(rcfg.password_file, &rcfg.password, &err)) {
      spdlog::critical("{}", err);
      return 2;
    }
    warn_exposed_password(cfg, inv);
  }
  // libuv writes with write(2): a Redis that went away must not kill us.
  signal(SIGPIPE, SIG_IGN);
  // Every client is a file descriptor: allow as many as the hard limit permits.
  rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }

  // The default runtime directory is created on demand; an explicit path's
  // directory must exist.
  const std::string rundir = default_runtime_dir(true);
  for (const std::string& p : {cfg.socket, cfg.posix_shm ? std::string() : cfg.segment})
    if (!p.empty() && std::filesystem::path(p).parent_path() == rundir && !ensure_runtime_dir(rundir, &err)) {
      spdlog::critical("{}", err);
      return 1;
    }

  shm::WriterOptions wo;
  wo.path = cfg.segment;
  wo.posix_shm = cfg.posix_shm;
  wo.segment_bytes = cfg.segment_size;
  wo.key_limit = uint32_t(cfg.key_limit);
  wo.value_limit = uint32_t(cfg.value_limit);
  wo.expected_item_bytes = uint32_t(std::min<uint64_t>(cfg.expected_item_size, UINT32_MAX));
  wo.mode = cfg.segment_mode;
  wo.heartbeat_grace_ms = uint32_t(cfg.heartbeat_grace_ms);
  wo.warm_restart = cfg.warm_restart;
  wo.redis_tier = cfg.redis.enabled();
  resolve_group(cfg.segment_group, &wo.group, &err);
  SavedSnapshot saved;
  bool have_snapshot = false;
  uint64_t serve_ms = 0;  // how long adopted entries may be served before the repair
  if (cfg.redis.enabled() && cfg.warm_restart) {
    std::string why;
    have_snapshot = load_repair_file(repair_file_path(cfg.segment, cfg.posix_shm, cfg.socket), &saved, &why) &&
                    saved.prefix == cfg.redis.prefix;
    if (have_snapshot) {
      wo.redis_snapshot_generation = saved.generation;
      serve_ms = adopted_serve_ms(saved, shm::monotonic_ms(), cfg.redis.stale_grace_ms);
      wo.redis_serve_adopted = serve_ms > 0;
    }
    else spdlog::debug("redis: {}", why.empty() ? "the saved snapshot is for another prefix" : why);
  }

  // The socket first: a second daemon must not touch the first one's segment.
  uv_loop_t loop;
  uv_loop_init(&loop);
  if (!check_socket(cfg.socket, &err)) {
    spdlog::critical("{}", err);
    return 1;
  }
  std::unique_ptr<shm::Writer> writer = shm::Writer::create(wo, &err);
  if (!writer) {
    spdlog::critical("cannot create the segment {}: {}", cfg.segment, err);
    return 1;
  }
  if (!writer->name_notice().empty()) spdlog::warn("segment {}", writer->name_notice());
  spdlog::info("{} (segment {}, generation {})", writer->start_report().summary(), writer->options().path,
               writer->generation());
  Engine engine(writer.get(), cfg);
  std::unique_ptr<nearcache::redis::Tier> tier;
  if (cfg.redis.enabled()) {
    tier = nearcache::redis::Tier::create(&loop, rcfg, engine.table_hooks(), &err);
    if (!tier) {
      spdlog::critical("{}", err);
      release_table(writer.get(), cfg);
      return 2;
    }
    engine.set_tier(tier.get());
    hook_repair(tier.get(), writer.get(), cfg, have_snapshot ? &saved : nullptr, serve_ms);
  }
  bool serve_on = false;  // release_table: readers may serve through the restart
  Server server(&loop, &engine, cfg, inv.flags);
  server.print_banner = inv.print_socket_banner;
  if (tier) {
    // The queue drains while the connections finish; clients still connected
    // are not cut before it is done.
    server.set_stop_grace_ms(cfg.redis.drain_timeout_ms + 1000);
    server.on_shutdown = [&tier, &serve_on, &cfg] {
      const nearcache::redis::TierStatus ts = tier->status();
      serve_on = ts.coherent && !ts.repair.suspended &&
                 cfg.redis.stale_grace_ms >= cfg.redis.drain_timeout_ms + cfg.heartbeat_grace_ms;
      tier->shutdown([](uint64_t left) {
        if (left == 0) spdlog::info("redis: write-behind queue flushed");
        // else the queue logged what it lost
      });
    };
    server.on_reload = [&tier, file = rcfg.password](const Config& c) mutable {
      std::string tls_err;
      if (!tier->reload_tls(&tls_err)) spdlog::error("SIGHUP: {}; keeping the previous TLS certificates", tls_err);
      if (!tier->reload_sentinel_password(c.redis.sentinel_password_file, &tls_err))
        spdlog::error("SIGHUP: {}; keeping the previous Sentinel password", tls_err);
      if (c.redis.password_file.empty()) return;
      std::string pw, why;
      if (!nearcache::redis::read_password_file(c.redis.password_file, &pw, &why)) {
        spdlog::error("SIGHUP: {}; keeping the previous password", why);
        return;
      }
      if (pw == file) return;
      file = pw;
      tier->set_password(pw);
      spdlog::info("SIGHUP: redis password changed; used from the next connection");
    };
  }
  if (!server.start(&err)) {
    spdlog::critical("{}", err);
    if (tier) {
      tier->shutdown([](uint64_t) {});
      uv_run(&loop, UV_RUN_DEFAULT);
    }
    release_table(writer.get(), cfg);
    return 1;
  }
  if (tier) tier->start();
  server.run();
  tier.reset();

  release_table(writer.get(), cfg, serve_on);
  uv_loop_close(&loop);
  spdlog::info("stopped");
  return 0;
}
