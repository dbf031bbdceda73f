// daemon/protocol/metrics.h — the one table of the daemon's metrics.
//
// Each row: name, kind (counter or gauge), unit, label for humans, help. The
// table drives STATUS's metric names, `nearcache status` (text), `--json`,
// `--prometheus` (as nearcache_<name>) and the docs; the daemon fills the
// values in engine.cc (collect_metrics), in table order. The Redis tier's
// rows, below them, are a second table (redis_metric_table), present only with Redis.
#pragma once

#include <cstddef>
#include <cstdint>

namespace nearcache::daemon {

enum class MetricKind { counter, gauge };
enum class MetricUnit { count, bytes, seconds, millis, ratio };

#define NEARCACHE_METRICS(X)                                                                                       \
  X(up, gauge, count, "up", "1 while the daemon answers")                                                          \
  X(uptime_seconds, gauge, seconds, "uptime", "Seconds since the daemon started")                                  \
  X(generation, gauge, count, "generation", "Generation of the segment (changes on every restart)")               \
  X(memory_total_bytes, gauge, bytes, "segment size", "Size of the shared-memory segment")                         \
  X(memory_data_bytes, gauge, bytes, "data area", "Bytes of the segment that can hold items")                      \
  X(memory_used_bytes, gauge, bytes, "memory used", "Data-area bytes held by live items, headers included")        \
  X(memory_free_bytes, gauge, bytes, "memory free", "Data-area bytes not held by live items")                      \
  X(entries, gauge, count, "entries", "Live entries in the table")                                                 \
  X(hits_total, counter, count, "hits", "Lookups that found a value: from shared memory plus from the daemon")     \
  X(shm_hits_total, counter, count, "hits from shared memory", "Values readers served from shared memory")         \
  X(daemon_hits_total, counter, count, "hits from the daemon", "GET, GET_MANY and LEASE keys the daemon found")    \
  X(misses_total, counter, count, "misses",                                                                       \
    "GET, GET_MANY and LEASE keys the daemon did not find, plus the definite misses readers answered themselves "  \
    "(shm_local_misses_total)")                                                                                    \
  X(hit_ratio, gauge, ratio, "hit ratio", "hits_total / (hits_total + misses_total)")                              \
  X(hit_ratio_1m, gauge, ratio, "hit ratio, last minute",                                                         \
    "Hit ratio over the last minute (the time since the newest STATUS at least 60 s old, or the start)")           \
  X(hit_ratio_1m_window_seconds, gauge, seconds, "hit ratio window",                                               \
    "Length of hit_ratio_1m's window: 60 when STATUS is asked at least once a second, longer otherwise")           \
  X(shm_misses_total, counter, count, "shared-memory misses",                                                      \
    "Reader lookups that found no value: fall-throughs to the daemon and definite misses answered locally")        \
  X(shm_local_misses_total, counter, count, "misses answered locally",                                             \
    "Definite misses (nothing in an authoritative table, or a negative entry) readers answered without asking "    \
    "the daemon; counted in misses_total")                                                                         \
  X(shm_busy_total, counter, count, "shared-memory busy", "Reader lookups that gave up on a bucket being rewritten")\
  X(reader_processes, gauge, count, "reader processes", "Reader processes with a hit region registered (op HITS)")  \
  X(shm_authoritative, gauge, count, "misses definite",                                                             \
    "1 while the segment header says a miss in the table is definite (no Redis tier, authoritative = true): "       \
    "clients answer such misses without asking")                                                                   \
  X(negative_entries, gauge, count, "negative entries",                                                            \
    "Cached \"Redis has no such key\" entries in the table (redis_negative_ttl_ms), counted in entries")            \
  X(negative_hits_total, counter, count, "negative hits",                                                          \
    "Misses the daemon answered from a negative entry without asking Redis (GET, GET_MANY, HAS_KEY, TOUCH)")       \
  X(negative_installs_skipped_total, counter, count, "negative entries not installed",                            \
    "Read-through misses not cached because redis_negative_max negative entries were present")                    \
  X(sets_total, counter, count, "sets", "SET, SET_MANY items and lease values stored")                             \
  X(sets_redis_only_total, counter, count, "sets to Redis only",                                                  \
    "SET and SET_MANY values over value_limit stored in Redis only, not in the table (redis_large_values)")        \
  X(adds_total, counter, count, "adds", "ADD requests")                                                            \
  X(deletes_total, counter, count, "deletes", "DELETE and DELETE_MANY keys")                                        \
  X(touches_total, counter, count, "touches", "TOUCH requests")                                                    \
  X(incrs_total, counter, count, "incr/decr", "INCR and DECR requests")                                            \
  X(evictions_total, counter, count, "evictions", "Live entries evicted to make room")                             \
  X(expirations_total, counter, count, "expirations", "Expired entries reclaimed")                                 \
  X(index_evictions_total, counter, count, "index evictions",                                                       \
    "Evictions made for room in the index, not the data area (lower expected_item_size if it grows)")               \
  X(clears_total, counter, count, "clears", "CLEAR requests")                                                      \
  X(cleared_total, counter, count, "entries cleared", "Entries removed by CLEAR")                                  \
  X(connections_open, gauge, count, "connections", "Open client connections")                                           \
  X(connections_total, counter, count, "connections accepted", "Connections accepted since start")                 \
  X(connections_refused_total, counter, count, "connections refused",                                               \
    "Connections refused (allow-list, max_connections, shutting down)")                                            \
  X(slow_clients_total, counter, count, "slow readers disconnected",                                              \
    "Clients disconnected for leaving more than max_output_bytes of replies unread")                               \
  X(requests_total, counter, count, "requests", "Requests answered")                                               \
  X(errors_total, counter, count, "error replies", "Replies with an error status (16 and above)")                  \
  X(bytes_received_total, counter, bytes, "bytes received", "Bytes read from clients")                             \
  X(bytes_sent_total, counter, bytes, "bytes sent", "Bytes of replies written to clients")                         \
  X(leases_active, gauge, count, "leases held", "Keys with a lease outstanding")                                   \
  X(lease_waiters, gauge, count, "leases waiting", "LEASE requests waiting for a value or the lease")              \
  X(leases_granted_total, counter, count, "leases granted", "Leases handed out")                                   \
  X(lease_timeouts_total, counter, count, "lease wait timeouts", "LEASE waits that ended in TIMEOUT")              \
  X(clears_pending, gauge, count, "clears in progress", "CLEAR requests not yet complete")                         \
  X(loop_lag_max_ms, gauge, millis, "loop lag max", "Largest event-loop lag seen (heartbeat timer lateness)")     \
  X(start_warm, gauge, count, "warm start",                                                                          \
    "1: this daemon adopted the table a previous one left (warm_restart); 0: it started cold (STATUS start.reason)") \
  X(start_kept_entries, gauge, count, "entries adopted",                                                            \
    "Entries kept when the table was adopted at start, or copied into a new one (STATUS start.copied)")              \
  X(start_dropped_entries, gauge, count, "entries dropped at adoption",                                              \
    "Entries adoption (or the copy) dropped (STATUS start.dropped says why)")

// The Redis tier's rows, in STATUS only when Redis is configured; their values
// come from Tier::status() through redis_metric_value() (redis/metrics.h).
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
  X(redis_queue_refused_dropped_total, counter, count, "write-behind refused, dropped here",                        \
    "SETs/TOUCHes Redis refused (maxmemory, read-only...) whose local copy this host dropped")                         \
  X(redis_fills_total, counter, count, "lease fills sent",                                                             \
    "SETs ending a lease this host held, sent as conditional fills (redis_conditional_fills)")                        \
  X(redis_fills_refused_total, counter, count, "lease fills refused",                                                  \
    "Lease fills not stored: their slot was written since the lease (or no counter was known); the local copy was dropped") \
  X(redis_readthrough_oversize_total, counter, count, "read-throughs oversize",                                        \
    "Redis values larger than this daemon relays (redis_relay_max_bytes, or value_limit), refused before being read") \
  X(redis_readthrough_large_total, counter, count, "read-throughs Redis-only",                                     \
    "Values over value_limit answered from Redis (or the queue) without being installed (redis_large_values)")     \
  X(redis_readthrough_foreign_total, counter, count, "read-throughs foreign",                                          \
    "Redis values nearcache did not write (not msgpack, no envelope), answered with flag 0x80")                      \
  X(redis_queue_coalesced_total, counter, count, "write-behind coalesced",                                               \
    "Queued operations replaced by a later one on the same key")                                                         \
  X(redis_invalidations_total, counter, count, "invalidations received", "Keys other hosts changed, received from Redis") \
  X(redis_coherence_lost_total, counter, count, "invalidation link losses",                                              \
    "Times invalidations stopped (the near tier is served for redis_stale_grace_ms, then repaired)")                                                           \
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
    "ADD/INCR/LEASE decided on this host because Redis was unreachable (redis_down=local)")                              \
  X(redis_tls, gauge, count, "Redis TLS", "1 when the Redis connections use TLS (rediss://)")                           \
  X(redis_tls_verify, gauge, count, "Redis TLS verified",                                                                \
    "1 when TLS verifies Redis's certificate chain and name; 0 with redis_tls_verify = false (or no TLS)")              \
  X(redis_tls_verify_failures_total, counter, count, "Redis TLS verify failures",                                        \
    "TLS handshakes refused because Redis's certificate did not verify (the reason is in last_error)")          \
  X(redis_sentinel_failovers_total, counter, count, "Sentinel failovers seen",                                   \
    "Times the Sentinels named another master (an answer or +switch-master); 0 without Sentinel")              \
  X(redis_sentinel_queries_total, counter, count, "Sentinel queries",                                            \
    "Times the Sentinels were asked for the master (before a connection attempt)")                             \
  X(redis_sentinel_query_failures_total, counter, count, "Sentinel queries failed",                              \
    "Queries no Sentinel answered (every Sentinel down, refusing, or not knowing the master)")                    \
  X(redis_suspended, gauge, count, "near tier suspended",                                                                \
    "1 while invalidations have been down longer than redis_stale_grace_ms (with 0: from the loss, the table dropped too) until the repair: the table is kept, not served")             \
  X(redis_repair_snapshots_total, counter, count, "slot snapshots",                                                     \
    "Snapshots of the per-slot write counters taken while invalidations flowed")                                        \
  X(redis_repair_snapshot_us, gauge, count, "slot snapshot time (us)",                                                  \
    "Time the last snapshot of the 16384 slot counters took to read (MGET pages, INFO)")                                \
  X(redis_repairs_total, counter, count, "repairs", "Gaps in invalidations repaired on reconnect")                      \
  X(redis_repairs_full_total, counter, count, "repairs that dropped all",                                               \
    "Repairs that could prove nothing (Redis restarted, unprovable failover, flush, CLEAR) and dropped every entry")     \
  X(redis_repair_slots_dropped_total, counter, count, "repair slots dropped",                                           \
    "Slots whose counter moved (or is missing) across a gap: their local entries were dropped")                          \
  X(redis_flush_ignored_total, counter, count, "other-db flushes ignored",                                               \
    "Flush messages after which this database's marker was intact (FLUSHDB of another database)")                      \
  X(redis_cluster_masters, gauge, count, "Cluster masters", "Redis Cluster masters serving slots; 0 on one server")     \
  X(redis_cluster_moved_total, counter, count, "Cluster MOVED",                                                        \
    "Queued writes a master answered MOVED: sent to the slot's new master (the slot map is refreshed)")               \
  X(redis_cluster_ask_total, counter, count, "Cluster ASK",                                                            \
    "Queued writes a master answered ASK (slot migrating): sent once to the importing master after ASKING")           \
  X(redis_cluster_retried_total, counter, count, "Cluster TRYAGAIN/CLUSTERDOWN",                                       \
    "Queued writes answered TRYAGAIN or CLUSTERDOWN, retried after a backoff")                                        \
  X(redis_cluster_redirect_replies_total, counter, count, "Cluster MOVED/ASK replies",                              \
    "MOVED and ASK error replies on the masters' data links (queued writes, reads, ADD/INCR/LEASE)")               \
  X(redis_cluster_refreshes_total, counter, count, "Cluster slot maps", "Slot maps read (CLUSTER SHARDS or SLOTS)")    \
  X(redis_cluster_slots_moved_total, counter, count, "Cluster slots moved",                                            \
    "Slots seen changing master (failover, resharding): their local entries were dropped")

enum class Metric : size_t {
#define NEARCACHE_METRIC_ENUM(name, kind, unit, label, help) name,
  NEARCACHE_METRICS(NEARCACHE_METRIC_ENUM)
#undef NEARCACHE_METRIC_ENUM
  count_
};
inline constexpr size_t kMetricCount = size_t(Metric::count_);

struct MetricSpec {
  const char* name;
  MetricKind kind;
  MetricUnit unit;
  const char* label;
  const char* help;
};

// Both tables are built from their rows by the same macro. The Redis tier's
// (above) are in STATUS only when Redis is configured.
#define NEARCACHE_METRIC_ROW(name, kind, unit, label, help) {#name, MetricKind::kind, MetricUnit::unit, label, help},
#define NEARCACHE_METRIC_COUNT_ROW(name, kind, unit, label, help) +1
inline constexpr size_t kRedisMetricCount = 0 NEARCACHE_REDIS_METRICS(NEARCACHE_METRIC_COUNT_ROW);

inline const MetricSpec* metric_table() {
  static const MetricSpec table[] = {NEARCACHE_METRICS(NEARCACHE_METRIC_ROW)};
  return table;
}

inline const MetricSpec* redis_metric_table() {
  static const MetricSpec table[] = {NEARCACHE_REDIS_METRICS(NEARCACHE_METRIC_ROW)};
  return table;
}
#undef NEARCACHE_METRIC_COUNT_ROW
#undef NEARCACHE_METRIC_ROW

// One value per metric; ratio metrics use `real`.
struct MetricValue {
  uint64_t count = 0;
  double real = 0;
};

}  // namespace nearcache::daemon
