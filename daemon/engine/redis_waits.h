// daemon/engine/redis_waits.h — the engine's coordination with the Redis tier,
// apart from what the ops do with the answers (engine_redis.cc):
//
//   - the registry of client requests waiting for Redis, each with a deadline
//     (redis_wait_ms) on the engine's deadline timer, and whether it holds its
//     connection's later requests back;
//   - write tracking: local writes to keys with a Redis-decided operation in
//     flight, so that a result is installed only when nothing wrote the key
//     since the operation was sent (a local write, an invalidation or a flush
//     is newer than what Redis answered);
//   - start(): the one way an operation Redis decides (ADD, INCR/DECR, LEASE)
//     is begun: track the key, open the wait, call the tier, and undo both
//     when the tier cannot take it (the caller then follows redis_down).
//
// Per key, never per link: a tier with a link per Redis Cluster master needs
// no change here (tier_api.h says how the seam grows). Loop thread only.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "protocol/session.h"
#include "redis/tier_api.h"

namespace nearcache::daemon {

enum class WaitKind { get, has_key, get_many, touch, add, incr, lease, lease_poll, replace, ttl, lock };

// Where a key's local writes stood when an operation on it was sent.
struct WriteSnap {
  uint64_t writes = 0, epoch = 0;
};

// An ADD, REPLACE, INCR/DECR, TTL or LEASE decided in Redis: what its answer needs, also
// when its client is gone or was answered without Redis (the answer still
// applies the outcome to the table, or gives back a lease nobody took).
struct Decided {
  WaitKind kind = WaitKind::add;
  std::string key, value;
  uint8_t flags = 0;
  uint64_t expiry = 0;
  int64_t delta = 0;
  bool decr = false;
  uint64_t token = 0, lease_ms = 0, wait_deadline = 0;
  redis::LockOp lock_op = redis::LockOp::acquire;  // lock: value is the holder's token, lease_ms the TTL
  WriteSnap snap;
  bool tracked = false;  // snap is registered (RedisWaits::track) until settled
  // LEASE: what is left of its wait_ms (for a local decision).
  uint64_t wait_left(uint64_t now) const { return wait_deadline > now ? wait_deadline - now : 0; }
};

using ManyResults = std::vector<std::optional<std::pair<std::string, uint8_t>>>;

struct ManyState {
  ManyResults results;
  size_t remaining = 0;
};

// A client request waiting for Redis: opened before the tier is called,
// closed by the tier's answer or at its deadline, whichever comes first.
struct RedisWait {
  uint64_t id = 0, session = 0, req = 0, deadline = 0;
  WaitKind kind = WaitKind::get;
  std::string key;
  uint64_t expiry = 0;              // TOUCH
  std::shared_ptr<Decided> ctx;     // ADD, INCR, LEASE
  uint64_t tier_wait = 0;           // LEASE polling another host's lease
  std::shared_ptr<ManyState> many;  // GET_MANY
};

class RedisWaits {
 public:
  struct Hooks {
    std::function<Session*(uint64_t id)> session;  // nullptr once it closed
    std::function<void(Session*)> resume;         // a blocked session may go on
    std::function<void()> deadlines_changed;      // re-arm for next_deadline()
  };
  explicit RedisWaits(Hooks hooks) : hooks_(std::move(hooks)) {}
  void set_tier(redis::TierApi* tier) { tier_ = tier; }

  // ---- the registry
  // Counts the request outstanding; ADD, INCR, LEASE and TOUCH also block the
  // session (Session::blocked) until the wait closes.
  RedisWait* open(Session* s, uint64_t req, WaitKind kind, uint64_t deadline);
  RedisWait* find(uint64_t wid);
  // nullptr when it was closed already (its deadline passed, its client left).
  std::unique_ptr<RedisWait> close(uint64_t wid);
  void set_deadline(RedisWait* w, uint64_t deadline);
  // A LEASE that found another host's lease waits on it as a lease waiter:
  // it no longer holds its connection's later requests back.
  void start_polling(RedisWait* w);
  // The next wait whose deadline is at or before now, closed; nullptr when none.
  std::unique_ptr<RedisWait> pop_due(uint64_t now);
  // Every wait of session `sid` (0: of every session), closed.
  std::vector<std::unique_ptr<RedisWait>> close_session(uint64_t sid);
  uint64_t next_deadline() const { return deadlines_.empty() ? UINT64_MAX : deadlines_.begin()->first; }
  bool polled(std::string_view key) const { return !polls_.empty() && polls_.count(std::string(key)); }
  uint64_t polls() const { return polls_total_; }

  // ---- write tracking
  WriteSnap track(std::string_view key);
  // true when nothing wrote the key since `at` was taken.
  bool untrack(std::string_view key, const WriteSnap& at);
  // The operation's key, if still tracked: untracked; true when unchanged since sent.
  bool settle(Decided& d);
  void wrote(std::string_view key) {
    if (!tracked_.empty()) wrote_tracked(key);
  }
  void wrote_all() { write_epoch_++; }  // a CLEAR or a flush: every key was written

  // ---- an operation Redis decides
  using Send = std::function<bool(redis::AtomicFn)>;
  using Answer = std::function<void(uint64_t wid, const std::shared_ptr<Decided>& d, const redis::AtomicResult& r)>;
  // Tracks d->key, opens the wait (kind d->kind) and calls send(callback);
  // the tier's result goes to answer(wid, d, r). false: the tier did not take
  // it (Redis unreachable): nothing is left open and the caller follows redis_down.
  bool start(Session* s, uint64_t req, const std::shared_ptr<Decided>& d, uint64_t deadline, const Send& send,
             Answer answer);

 private:
  void unblock(Session* s, uint64_t wid);
  void wrote_tracked(std::string_view key);
  void retire_poll(RedisWait& w);

  struct Tracked {
    uint32_t refs = 0;
    uint64_t writes = 0;
  };
  Hooks hooks_;
  redis::TierApi* tier_ = nullptr;
  std::unordered_map<uint64_t, std::unique_ptr<RedisWait>> waits_;
  std::set<std::pair<uint64_t, uint64_t>> deadlines_;  // (deadline, wait id)
  uint64_t next_id_ = 1;
  std::unordered_map<std::string, Tracked> tracked_;
  uint64_t write_epoch_ = 0;
  std::unordered_map<std::string, uint32_t> polls_;  // keys with LEASEs waiting on Redis
  uint64_t polls_total_ = 0;
};

}  // namespace nearcache::daemon
