// daemon/redis/sentinel.h — Redis Sentinel: where the current master is.
//
// Follows the Sentinel clients guide: locate() asks the Sentinels in order,
// each within sentinel_timeout_ms (its own short-lived Link: connect, AUTH,
// `SENTINEL get-master-addr-by-name NAME`), and moves the first that answers
// to the front of the list; a Sentinel that is down, refuses, or does not
// know the master only costs its timeout. One query runs at a time: callers
// that ask while one is in flight get its answer (the data and invalidation
// links, reconnecting together, get the same master).
//
// The links ask before every attempt (LinkOptions::locate) and then check
// ROLE is master (LinkOptions::require_master): an answer may be stale while a
// failover runs, and a failed check is retried after the link's backoff.
//
// A persistent subscriber Link on one Sentinel (the front one, the next after
// a failure) listens to +switch-master; when the master's address changes,
// from that message or from an answer, on_master listeners hear it (the tier
// moves links that are on another address and wakes links in backoff).
//
// Single-threaded (loop thread). Lifetime: start(), ..., close(cb); destroy
// once cb has run.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "redis/link.h"
#include "redis/url.h"

namespace nearcache::redis {

struct SentinelOptions {
  std::vector<HostPort> sentinels;  // in the order to ask
  std::string master;               // the name they monitor it under
  Endpoint auth;                    // every Sentinel's but host and port: tls (rediss://: TLS to
                                    // the Sentinels too), the redis_sentinel_password_file's AUTH
  uint64_t timeout_ms = 250;        // one Sentinel's connect + AUTH + answer
  LinkOptions link;                 // reconnect backoff and TLS for the subscriber link
};

struct SentinelStatus {
  std::string master_name;
  std::string master;               // host:port last named ("" until one answers)
  std::string last_sentinel;        // host:port of the Sentinel that answered last
  std::string last_error;           // why the last query found no master ("" after a success)
  uint64_t queries_total = 0;       // queries (one per group of callers)
  uint64_t query_failures_total = 0;  // queries no Sentinel answered
  uint64_t failovers_total = 0;     // times the master's address changed
  uint64_t switch_messages_total = 0;  // +switch-master messages for this master
  bool subscribed = false;          // the +switch-master subscription is up
};

class Sentinels {
 public:
  using MasterFn = std::function<void(const HostPort& master, bool from_switch_message)>;

  Sentinels(uv_loop_t* loop, SentinelOptions opts);
  ~Sentinels();
  Sentinels(const Sentinels&) = delete;
  Sentinels& operator=(const Sentinels&) = delete;

  void start();  // the +switch-master subscription
  void close(std::function<void()> closed);

  // The master's address; `done` runs once, from the loop (never inside this call).
  void locate(LinkOptions::Located done);
  // Heard when the master's address changes (not on the first answer).
  void on_master(MasterFn fn) { on_master_ = std::move(fn); }
  // From the next connection to a Sentinel (SIGHUP).
  void set_password(const std::string& pw) { opts_.auth.password = pw, opts_.auth.has_password = true; }
  void set_tls(std::shared_ptr<const TlsClient> tls);

  SentinelStatus status() const;

 private:
  void ask(size_t i);
  void next(const std::string& why);
  void finish(bool ok, const std::string& why);
  void learned(const HostPort& m, bool from_switch);
  void retire(std::unique_ptr<Link> l);
  void on_switch(const struct redisReply* m);
  Endpoint endpoint_of(const HostPort& s) const;
  static void on_step(uv_timer_t* t);

  uv_loop_t* loop_;
  SentinelOptions opts_;
  std::vector<HostPort> order_;          // the list, answering Sentinel first
  std::vector<LinkOptions::Located> waiters_;
  bool querying_ = false;
  size_t asking_ = 0;                    // index in order_ of the Sentinel asked
  uint64_t try_token_ = 0;               // the Sentinel try an answer belongs to
  std::unique_ptr<Link> query_;          // the connection to it
  enum class Outcome { none, answered, failed } outcome_ = Outcome::none;
  std::string outcome_why_;
  HostPort answer_;
  std::string errors_;                   // of this query, per Sentinel
  uv_timer_t step_;                      // per-Sentinel timeout, and every step from the loop
  std::unique_ptr<Link> sub_;            // +switch-master
  size_t sub_index_ = 0;                 // which Sentinel the subscriber tries
  std::vector<std::unique_ptr<Link>> closing_;
  int handles_ = 0;
  bool closed_flag_ = false;
  std::function<void()> closed_;
  MasterFn on_master_;
  HostPort master_;
  SentinelStatus st_;
};

}  // namespace nearcache::redis
