// daemon/main.cc — nearcached: parse options, create the table, serve until
// SIGTERM/SIGINT, then mark the table stopped and remove its names.
//
// Exit status: 0 after a clean stop (and for --help, --print-config...),
// 1 when the daemon cannot start (socket or segment in use, permissions),
// 2 for a bad command line or configuration.
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <spdlog/spdlog.h>

#include "engine.h"
#include "log.h"
#include "metrics.h"
#include "options.h"
#include "server.h"
#include "writer.h"

using namespace nearcache::daemon;
namespace shm = nearcache::shm;

namespace {
// The metrics section of doc/configuration.md, from the metric table.
std::string metrics_markdown() {
  std::string s =
      "\n## Status and metrics\n\n"
      "`nearcache status` prints these for people, `--json` for scripts (with `config`, `connections`, "
      "`version`, `pid`, `uptime_s`), `--prometheus` in the Prometheus text format as `nearcache_<name>` "
      "(plus `nearcache_build_info`; `nearcache_up 0` when the daemon cannot be reached). STATUS over the "
      "socket returns the same map. Hits count both the values readers served from shared memory and the "
      "ones the daemon returned.\n\n| metric | type | meaning |\n| --- | --- | --- |\n";
  const MetricSpec* t = metric_table();
  for (size_t i = 0; i < kMetricCount; ++i)
    s += std::string("| `") + t[i].name + "` | " + (t[i].kind == MetricKind::counter ? "counter" : "gauge") +
         " | " + t[i].help + " |\n";
  return s;
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
  if (!cfg.redis_url.empty()) {
    spdlog::critical("redis_url is set, but the Redis tier is not implemented yet; remove redis_url to run "
                     "nearcached as a host-local cache");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  // Every client is a file descriptor: allow as many as the hard limit permits.
  rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }

  // The default runtime directory is created on demand; an explicit path's
  // directory must exist.
  const std::string rundir = default_runtime_dir();
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
  wo.hints_mode = cfg.hints_mode;
  wo.heartbeat_grace_ms = uint32_t(cfg.heartbeat_grace_ms);
  resolve_group(cfg.segment_group, &wo.group, &err);

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
  Engine engine(writer.get(), cfg);
  Server server(&loop, &engine, cfg, inv.flags);
  server.print_banner = inv.print_socket_banner;
  if (!server.start(&err)) {
    spdlog::critical("{}", err);
    writer->stop();
    writer->remove();
    return 1;
  }
  server.run();

  writer->stop();
  writer->remove();
  uv_loop_close(&loop);
  spdlog::info("stopped");
  return 0;
}
