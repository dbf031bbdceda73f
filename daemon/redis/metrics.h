// daemon/redis/metrics.h — the Redis tier's rows for the daemon's metric
// table (daemon/metrics.h), in the same X-macro shape:
//   X(name, kind, unit, label, help)
// The daemon appends NEARCACHE_REDIS_METRICS(X) to NEARCACHE_METRICS and
// fills each row from Tier::status() with redis_metric_value(). Text fields
// (link state, since, last error, URL) are not metrics: STATUS shows them
// from TierStatus directly (see README.md).
#pragma once

#include <cstdint>

#include "redis/tier.h"

#define NEARCACHE_REDIS_METRICS(X)                                                                                   \
  X(redis_connected, gauge, count, "Redis connected", "1 while the data connection to Redis is up")                    \
  X(redis_coherent, gauge, count, "Redis invalidations", "1 while other hosts' writes invalidate this host's entries") \
  X(redis_degraded, gauge, count, "Redis degraded",                                                                     \
    "1 while Redis is unreachable and redis_down=local: ADD/INCR/LEASE are decided on this host alone")                 \
  X(redis_connects_total, counter, count, "Redis connects", "Times the data connection became ready")                   \
  X(redis_failures_total, counter, count, "Redis connection failures",                                                  \
    "Failed connection attempts and lost connections (data link)")                                                      \
  X(redis_timeouts_total, counter, count, "Redis timeouts", "Commands that got no reply within redis_command_timeout_ms") \
  X(redis_queue_depth, gauge, count, "write-behind queue", "Operations queued for Redis or in flight")                   \
  X(redis_queue_bytes, gauge, bytes, "write-behind bytes", "Bytes held by the write-behind queue")                       \
  X(redis_queue_flushed_total, counter, count, "write-behind flushed", "Queued operations Redis acknowledged")           \
  X(redis_queue_dropped_total, counter, count, "write-behind dropped",                                                   \
    "Operations dropped because the write-behind queue was full")                                                        \
  X(redis_queue_failed_total, counter, count, "write-behind failed", "Queued operations Redis answered with an error")    \
  X(redis_queue_coalesced_total, counter, count, "write-behind coalesced",                                               \
    "Queued operations replaced by a later one on the same key")                                                         \
  X(redis_invalidations_total, counter, count, "invalidations received", "Keys other hosts changed, received from Redis") \
  X(redis_coherence_lost_total, counter, count, "invalidation link losses",                                              \
    "Times invalidations stopped (the near tier was flushed)")                                                           \
  X(redis_local_flushes_total, counter, count, "near tier flushes",                                                      \
    "Times every local entry was dropped: invalidations stopped or restarted, FLUSHDB")                                  \
  X(redis_readthrough_hits_total, counter, count, "read-through hits", "Local misses that Redis (or the queue) answered") \
  X(redis_readthrough_misses_total, counter, count, "read-through misses", "Local misses Redis did not have either")      \
  X(redis_readthrough_errors_total, counter, count, "read-through errors",                                               \
    "Read-throughs that failed or timed out (answered as misses)")                                                       \
  X(redis_readthrough_skipped_total, counter, count, "read-throughs skipped",                                            \
    "Local misses answered at once because Redis was unreachable")                                                       \
  X(redis_readthrough_joined_total, counter, count, "read-throughs joined",                                              \
    "Local misses that joined a read of the same key already in flight (single flight)")                                 \
  X(redis_readthrough_stale_total, counter, count, "read-throughs not installed",                                        \
    "Redis values not installed because the key was invalidated or written while they were read")                        \
  X(redis_atomic_errors_total, counter, count, "Redis-decided op errors",                                                \
    "ADD/INCR/LEASE/RELEASE that Redis did not decide (timeout, lost connection, error)")                                \
  X(redis_local_decisions_total, counter, count, "decided locally",                                                      \
    "ADD/INCR/LEASE decided on this host because Redis was unreachable (redis_down=local)")

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
    case RedisMetric::count_: break;
  }
  return 0;
}

}  // namespace nearcache::redis
