// daemon/redis/metrics.h — the values of the Redis tier's metric rows
// (in protocol/metrics.h, beside the daemon's own), which the daemon's metric table lists as a second
// table shown only when Redis is configured (daemon/metrics.h). Text fields
// (link state, since, last error, URL) are not metrics: STATUS shows them
// from TierStatus directly (see README.md).
#pragma once

#include <cstdint>

#include "protocol/metrics.h"
#include "redis/tier.h"

namespace nearcache::redis {

enum class RedisMetric : int {
#define NEARCACHE_REDIS_METRIC_ENUM(name, kind, unit, label, help) name,
  NEARCACHE_REDIS_METRICS(NEARCACHE_REDIS_METRIC_ENUM)
#undef NEARCACHE_REDIS_METRIC_ENUM
      count_
};

inline uint64_t redis_metric_value(const TierStatus& s, RedisMetric m) {
  switch (m) {
    case RedisMetric::redis_connected: return s.data.state == LinkState::ready;
    case RedisMetric::redis_coherent: return s.coherent;
    case RedisMetric::redis_degraded: return s.degraded;
    case RedisMetric::redis_connects_total: return s.data.connects_total;
    case RedisMetric::redis_failures_total: return s.data.failures_total;
    case RedisMetric::redis_timeouts_total: return s.data.timeouts_total;
    case RedisMetric::redis_queue_depth: return s.queue.depth;
    case RedisMetric::redis_queue_bytes: return s.queue.bytes;
    case RedisMetric::redis_queue_flushed_total: return s.queue.flushed_total;
    case RedisMetric::redis_queue_dropped_total: return s.queue.dropped_total;
    case RedisMetric::redis_queue_failed_total: return s.queue.failed_total;
    case RedisMetric::redis_queue_refused_dropped_total: return s.queue.refused_dropped_total;
    case RedisMetric::redis_fills_total: return s.queue.fills_total;
    case RedisMetric::redis_fills_refused_total: return s.queue.fills_refused_total;
    case RedisMetric::redis_readthrough_oversize_total: return s.reads.oversize_total;
    case RedisMetric::redis_readthrough_large_total: return s.reads.large_total;
    case RedisMetric::redis_readthrough_foreign_total: return s.reads.foreign_total;
    case RedisMetric::redis_queue_coalesced_total: return s.queue.coalesced_total;
    case RedisMetric::redis_invalidations_total: return s.inval.keys_total;
    case RedisMetric::redis_coherence_lost_total: return s.inval.lost_total;
    case RedisMetric::redis_local_flushes_total: return s.local_flushes_total;
    case RedisMetric::redis_readthrough_hits_total: return s.reads.hits_total + s.reads.queue_hits_total;
    case RedisMetric::redis_readthrough_misses_total: return s.reads.misses_total;
    case RedisMetric::redis_readthrough_errors_total: return s.reads.errors_total;
    case RedisMetric::redis_readthrough_skipped_total: return s.reads.unavailable_total;
    case RedisMetric::redis_readthrough_joined_total: return s.reads.joined_total;
    case RedisMetric::redis_readthrough_stale_total: return s.reads.stale_total;
    case RedisMetric::redis_atomic_errors_total: return s.atomics.errors_total;
    case RedisMetric::redis_local_decisions_total: return s.local_decisions_total;
    case RedisMetric::redis_tls: return s.data.tls;
    case RedisMetric::redis_tls_verify: return s.data.tls_verify;
    case RedisMetric::redis_tls_verify_failures_total:
      return s.data.tls_verify_failures_total + s.invalidation.tls_verify_failures_total;
    case RedisMetric::redis_sentinel_failovers_total: return s.sentinel.failovers_total;
    case RedisMetric::redis_sentinel_queries_total: return s.sentinel.queries_total;
    case RedisMetric::redis_sentinel_query_failures_total: return s.sentinel.query_failures_total;
    case RedisMetric::redis_suspended: return s.repair.suspended;
    case RedisMetric::redis_repair_snapshots_total: return s.repair.snapshots_total;
    case RedisMetric::redis_repair_snapshot_us: return s.repair.snapshot_us_last;
    case RedisMetric::redis_repairs_total: return s.repair.repairs_total;
    case RedisMetric::redis_repairs_full_total: return s.repair.repairs_full_total;
    case RedisMetric::redis_repair_slots_dropped_total: return s.repair.slots_dropped_total;
    case RedisMetric::redis_flush_ignored_total: return s.repair.flush_ignored_total;
    case RedisMetric::redis_cluster_masters: return s.cluster.masters;
    case RedisMetric::redis_cluster_moved_total: return s.cluster.moved_total;
    case RedisMetric::redis_cluster_ask_total: return s.cluster.ask_total;
    case RedisMetric::redis_cluster_retried_total: return s.cluster.retried_total;
    case RedisMetric::redis_cluster_redirect_replies_total: return s.cluster.redirect_replies_total;
    case RedisMetric::redis_cluster_refreshes_total: return s.cluster.refreshes_total;
    case RedisMetric::redis_cluster_slots_moved_total: return s.cluster.slots_moved_total;
    case RedisMetric::count_: break;
  }
  return 0;
}

}  // namespace nearcache::redis
