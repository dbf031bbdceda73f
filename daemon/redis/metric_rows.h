// daemon/redis/metric_rows.h — the Redis tier's rows for the daemon's metric
// table (daemon/metrics.h), in the same X-macro shape:
//   X(name, kind, unit, label, help)
// Without dependencies, so that the CLI renders them too. The values come
// from Tier::status() through redis_metric_value() (redis/metrics.h).
#pragma once

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
    "1 while invalidations have been down longer than redis_stale_grace_ms: the table is kept, not served")             \
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
