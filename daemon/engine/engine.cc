// daemon/engine/engine.cc — request decoding and every operation of doc/protocol.md
// on the local table; replies through protocol/reply.h; what an op does with
// the Redis tier is in engine_redis.cc.
#include "engine/engine.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <msgpack.hpp>
#include <spdlog/spdlog.h>

#include "protocol/codec.h"
#include "protocol/reply.h"
#include "hits.h"
#include "reader.h"
#include "table_view.h"
#include "segment_file.h"
#include "writer.h"

namespace nearcache::daemon {

namespace {

using msgpack::type::object_type;

const char* type_name(const msgpack::object& o) {
  switch (o.type) {
    case msgpack::type::NIL: return "nil";
    case msgpack::type::BOOLEAN: return "bool";
    case msgpack::type::POSITIVE_INTEGER: return "positive integer";
    case msgpack::type::NEGATIVE_INTEGER: return "negative integer";
    case msgpack::type::FLOAT32:
    case msgpack::type::FLOAT64: return "float";
    case msgpack::type::STR: return "str";
    case msgpack::type::BIN: return "bin";
    case msgpack::type::ARRAY: return "array";
    case msgpack::type::MAP: return "map";
    case msgpack::type::EXT: return "ext";
  }
  return "?";
}

constexpr size_t kMaxPendingClears = 256;

std::string refused(shm::Status st) { return std::string("table refused: ") + shm::status_name(st); }

// Arity and argument names of each op, for BAD_ARGS messages.
struct OpSpec {
  uint32_t min, max;
  const char* sig;
};
const OpSpec kOpSpecs[kMaxOp + 1] = {
    {0, 0, ""},
    {1, 2, "version [, client_name]"},                 // HELLO
    {0, 0, "no arguments"},                            // PING
    {1, 1, "key"},                                     // GET
    {1, 1, "[key, ...]"},                              // GET_MANY
    {3, 4, "key, value, ttl [, flags]"},               // SET
    {3, 4, "key, value, ttl [, flags]"},               // ADD
    {2, 2, "[[key, value, flags], ...], ttl"},         // SET_MANY
    {1, 1, "key"},                                     // DELETE
    {1, 1, "[key, ...]"},                              // DELETE_MANY
    {2, 2, "key, ttl"},                                // TOUCH
    {2, 2, "key, delta"},                              // INCR
    {2, 2, "key, delta"},                              // DECR
    {1, 1, "key"},                                     // HAS_KEY
    {0, 1, "[prefix]"},                                // CLEAR
    {3, 3, "key, lease_ms, wait_ms"},                  // LEASE
    {2, 2, "key, token"},                              // RELEASE
    {0, 0, "no arguments"},                            // STATUS
    {0, 0, "no arguments (the region's fd in SCM_RIGHTS)"},  // HITS
    {1, 1, "key"},                                     // TTL
    {3, 4, "key, value, ttl [, flags]"},               // REPLACE
    {3, 3, "cursor, pattern, count"},                  // SCAN
    {1, 1, "pattern"},                                 // DELETE_PATTERN
    {3, 3, "key, token, ttl"},                         // LOCK
    {2, 2, "key, token"},                              // UNLOCK
    {4, 4, "key, token, ms, replace"},                 // LOCK_EXTEND
    {1, 1, "key"},                                     // LOCK_QUERY
};

// SCAN: keys per reply at most (a reply stays under count * key_limit), and
// scans in progress per connection.
constexpr uint64_t kMaxScanCount = 10000;
constexpr size_t kMaxScansPerSession = 16;
// The work of visits per loop turn when no CLEAR shares the pass.
constexpr uint64_t kScanSliceUs = 1000;

}  // namespace

struct Engine::Decoder {
  msgpack::zone zone;
};

// A request's arguments, with typed accessors that answer BAD_ARGS (or the
// limit errors) themselves and return false.
struct Engine::Args {
  Engine* e;
  Session* s;
  uint64_t id;
  uint32_t op;
  const msgpack::object* v;
  uint32_t n;

  bool bad(const std::string& what) {
    e->error(s, &id, Code::bad_args, std::string(op_name(op)) + ": " + what);
    return false;
  }
  // KEY_TOO_LONG, VALUE_TOO_LARGE
  bool over_limit(Code c, const char* what, size_t size, uint64_t limit) {
    e->error(s, &id, c, std::string(what) + " is " + std::to_string(size) + " bytes, limit " + std::to_string(limit));
    return false;
  }
  bool bytes(const msgpack::object& o, std::string_view* out, const char* what) {
    if (!is_bytes(o)) return bad(std::string(what) + " must be bytes (bin or str), got " + type_name(o));
    *out = bytes_of(o);
    return true;
  }
  bool key_of(const msgpack::object& o, std::string_view* out) {
    if (!bytes(o, out, "key")) return false;
    if (out->size() > e->cfg_.key_limit) return over_limit(Code::key_too_long, "key", out->size(), e->cfg_.key_limit);
    return true;
  }
  bool key(size_t i, std::string_view* out) { return key_of(v[i], out); }
  // set: SET's bound (set_value_limit: larger with a Redis tier), else value_limit.
  bool value(size_t i, std::string_view* out, bool set = false) {
    if (!bytes(v[i], out, "value")) return false;
    const uint64_t limit = set ? e->set_value_limit() : e->cfg_.value_limit;
    if (out->size() > limit) return over_limit(Code::value_too_large, "value", out->size(), limit);
    return true;
  }
  bool u64(size_t i, uint64_t* out, const char* what) {
    if (v[i].type != msgpack::type::POSITIVE_INTEGER)
      return bad(std::string(what) + " must be a non-negative integer, got " + type_name(v[i]));
    *out = v[i].via.u64;
    return true;
  }
  bool i64(size_t i, int64_t* out, const char* what) {
    if (v[i].type == msgpack::type::NEGATIVE_INTEGER) return *out = v[i].via.i64, true;
    if (v[i].type == msgpack::type::POSITIVE_INTEGER && v[i].via.u64 <= uint64_t(INT64_MAX))
      return *out = int64_t(v[i].via.u64), true;
    return bad(std::string(what) + " must be a signed 64-bit integer, got " + type_name(v[i]));
  }
  bool flags_of(const msgpack::object& o, uint8_t* out) {
    if (o.type != msgpack::type::POSITIVE_INTEGER || o.via.u64 > 255)
      return bad(std::string("flags must be an integer 0-255, got ") + type_name(o));
    *out = uint8_t(o.via.u64);
    return true;
  }
  bool array(size_t i, const char* what) {
    if (v[i].type != msgpack::type::ARRAY) return bad(std::string(what) + " must be an array, got " + type_name(v[i]));
    return true;
  }
};

Engine::Engine(shm::Writer* writer, const Config& cfg, EngineHooks hooks)
    : w_(writer),
      cfg_(cfg),
      hooks_(std::move(hooks)),
      dec_(new Decoder),
      waits_({[this](uint64_t id) { return session(id); },
              [this](Session* s) {
                if (hooks_.resume) hooks_.resume(s);
              },
              [this] {
                if (hooks_.deadlines_changed) hooks_.deadlines_changed();
              }}),
      clock_(shm::monotonic_ms),
      slice_clock_(mono_us) {
  started_ms_ = clock_();
  key_stats_.configure(cfg_.key_stats, uint32_t(cfg_.key_stats_prefix_depth), cfg_.key_stats_separators);
  // The writer's own mapping, read as a reader reads it: way index -> key.
  view_reader_ = std::make_unique<shm::Reader>();
  std::string why;
  if (w_->segment_base() && view_reader_->attach(w_->segment_base(), w_->segment_bytes(), &why) == 0)
    view_ = std::make_unique<shm::TableView>(*view_reader_);
  else
    spdlog::warn("key_stats: cannot read the table ({}): shared-memory hits are not attributed to keys", why);
  w_->set_visitor([this](uint64_t visit, const shm::Item& it) {
    auto sc = scans_.find(visit);
    if (sc != scans_.end()) sc->second.keys.emplace_back(it.key);
  });
}

Engine::~Engine() { w_->set_visitor(nullptr); }

void Engine::configure(const Config& cfg) {
  // The reloadable rows only; the rest is fixed by the segment or the socket.
  copy_reloadable(cfg, &cfg_);
  key_stats_.configure(cfg_.key_stats, uint32_t(cfg_.key_stats_prefix_depth), cfg_.key_stats_separators);
}

// ---------------------------------------------------------------- sessions

void Engine::attach(Session* s) {
  s->scanner.set_limit(cfg_.max_frame_bytes);
  sessions_[s->id] = s;
}

void Engine::detach(Session* s) {
  sessions_.erase(s->id);
  if (auto it = regions_.find(s->id); it != regions_.end()) {
    poll_region(it->second.get(), KeyStats::kSamplesPerPoll);  // its last counts
    regions_.erase(it);
    w_->set_reader_processes(uint32_t(regions_.size()));
  }
  if (s->outstanding) cancel_waits(s->id);
  for (auto it = scans_.begin(); it != scans_.end();) {
    if (it->second.session != s->id) {
      if (it->second.asker == s->id) it->second.waiting = false;  // nobody to answer; the scan goes on
      ++it;
      continue;
    }
    if (w_->clear_done(it->first)) w_->clear_take(it->first);
    else orphan_visits_.push_back(it->first);
    it = scans_.erase(it);
  }
  std::vector<Leases::Event> ev;
  leases_.drop_conn(s->id, now_ms(), &ev);
  apply_events(ev);
  if (hooks_.deadlines_changed) hooks_.deadlines_changed();
  // Its pending clears still complete; their replies are dropped in finish_clears.
}

Session* Engine::session(uint64_t id) const {
  auto it = sessions_.find(id);
  return it == sessions_.end() ? nullptr : it->second;
}

void Engine::mark_dirty(Session* s) {
  if (hooks_.dirty) hooks_.dirty(s);
}

// ---------------------------------------------------------------- replies

void Engine::error(Session* s, const uint64_t* id, Code c, std::string_view detail) {
  std::string message = code_name(c);
  message.append(": ").append(detail);
  error_text(s, id, c, message);
}

void Engine::error_text(Session* s, const uint64_t* id, Code c, const std::string& message) {
  reply::error_text(s->out, id, c, message);
  errors_total_++;
  if (code_closes(c)) {
    s->closing = true;
    if (s->close_reason.empty()) s->close_reason = message;
  }
  spdlog::debug("conn {}: {}", s->id, message);
}

void Engine::incr_error(Session* s, uint64_t id, Code c, bool decr) {
  if (c == Code::not_integer) return error(s, &id, c, "the value of the key is not a msgpack integer");
  error(s, &id, c, std::string(decr ? "DECR" : "INCR") + " result outside the signed 64-bit range; value unchanged");
}

void Engine::refuse(Session* s, Code c, const std::string& message) {
  error_text(s, nullptr, c, message);
  s->closing = true;
  if (s->close_reason.empty()) s->close_reason = message;
  mark_dirty(s);
}

void Engine::reply_value(Session* s, uint64_t id, std::string_view value, uint8_t flags, uint64_t expiry,
                         bool with_meta) {
  reply::value(s->out, id, value, flags, expiry, expiry ? now_ms() : 0, with_meta);
}

// ---------------------------------------------------------------- decoding

void Engine::feed(Session* s) {
  const size_t before = s->out.bytes.size();
  size_t frames = 0, consumed = 0;  // against s->budget (session.h)
  s->yielded = false;
  while (!s->closing && !s->kill && !s->blocked && s->in.size() > 0) {
    if (frames >= s->budget.frames || consumed >= s->budget.in_bytes ||
        s->out.bytes.size() - std::min(before, s->out.bytes.size()) >= s->budget.out_bytes) {
      s->yielded = true;  // the transport feeds the rest later
      break;
    }
    const auto r = s->scanner.scan(s->in.data(), s->in.size());
    if (r == FrameScanner::Result::need_more) break;
    if (r == FrameScanner::Result::complete) {
      const size_t n = s->scanner.size();
      dispatch(s, s->in.data(), n);
      s->in.consume(n);
      s->scanner.reset();
      frames++, consumed += n;
      continue;
    }
    // The stream can no longer be trusted: answer, then the server closes it.
    const uint64_t id = s->scanner.id();
    error_text(s, s->scanner.has_id() ? &id : nullptr,
               r == FrameScanner::Result::too_large ? Code::frame_too_large : Code::bad_frame, s->scanner.error());
    s->in.consume(s->in.size());
    s->scanner.reset();
  }
  if (s->out.bytes.size() != before) mark_dirty(s);
}

void Engine::dispatch(Session* s, const unsigned char* frame, size_t len) {
  requests_total_++;
  msgpack::object root;
  try {
    dec_->zone.clear();
    size_t off = 0;
    // The scanner bounded the frame and its depth; values reference the input buffer.
    root = msgpack::unpack(
        dec_->zone, reinterpret_cast<const char*>(frame), len, off,
        [](object_type, std::size_t, void*) { return true; }, nullptr,
        msgpack::unpack_limit(len, len, len, len, len, FrameScanner::kMaxDepth + 1));
  } catch (const std::exception& e) {
    error(s, nullptr, Code::bad_frame, std::string("not valid msgpack: ") + e.what());
    return;
  }
  const uint32_t n = root.via.array.size;
  const msgpack::object* v = root.via.array.ptr;
  const bool id_ok = n >= 2 && v[1].type == msgpack::type::POSITIVE_INTEGER;
  const uint64_t id = id_ok ? v[1].via.u64 : 0;
  if (n < 2) return error(s, nullptr, Code::bad_frame, "a request is [op, id, args...], got " + std::to_string(n) + " element(s)");
  if (v[0].type != msgpack::type::POSITIVE_INTEGER)
    return error(s, id_ok ? &id : nullptr, Code::bad_frame,
                 std::string("op must be an unsigned integer, got ") + type_name(v[0]));
  if (!id_ok)
    return error(s, nullptr, Code::bad_frame,
                 std::string("id must be an unsigned integer, got ") + type_name(v[1]));
  s->requests++;
  const uint64_t op = v[0].via.u64;
  if (stopping_) return error(s, &id, Code::shutting_down, "the daemon is stopping");
  if (op == 0 || op > kMaxOp) return error(s, &id, Code::unknown_op, "no op " + std::to_string(op));
  if (s->outstanding >= cfg_.max_outstanding)
    return error(s, &id, Code::too_many_requests,
                 std::to_string(s->outstanding) + " requests outstanding, limit " +
                     std::to_string(cfg_.max_outstanding));
  Args a{this, s, id, uint32_t(op), v + 2, n - 2};
  const OpSpec& spec = kOpSpecs[op];
  if (a.n < spec.min || a.n > spec.max) {
    a.bad("takes " + std::string(spec.sig) + " (" + std::to_string(spec.min) +
          (spec.max != spec.min ? "-" + std::to_string(spec.max) : "") + " argument(s)), got " + std::to_string(a.n));
    return;
  }
  execute(s, uint32_t(op), id, a);
}

void Engine::execute(Session* s, uint32_t op, uint64_t id, Args& a) {
  switch (Op(op)) {
    case Op::hello: return op_hello(s, id, a);
    case Op::ping: return reply::ok(s->out, id);
    case Op::get: return op_get(s, id, a);
    case Op::get_many: return op_get_many(s, id, a);
    case Op::set: return op_store(s, id, a, StoreIf::always);
    case Op::add: return op_store(s, id, a, StoreIf::absent);
    case Op::replace: return op_store(s, id, a, StoreIf::present);
    case Op::ttl: return op_ttl(s, id, a);
    case Op::scan: return op_scan(s, id, a);
    case Op::delete_pattern: return op_delete_pattern(s, id, a);
    case Op::lock: return op_lock(s, id, a, redis::LockOp::acquire);
    case Op::unlock: return op_lock(s, id, a, redis::LockOp::release);
    case Op::lock_extend: return op_lock(s, id, a, redis::LockOp::extend);
    case Op::lock_query: return op_lock(s, id, a, redis::LockOp::query);
    case Op::set_many: return op_set_many(s, id, a);
    case Op::del: return op_delete(s, id, a);
    case Op::delete_many: return op_delete_many(s, id, a);
    case Op::touch: return op_touch(s, id, a);
    case Op::incr: return op_incr(s, id, a, false);
    case Op::decr: return op_incr(s, id, a, true);
    case Op::has_key: return op_has_key(s, id, a);
    case Op::clear: return op_clear(s, id, a);
    case Op::lease: return op_lease(s, id, a);
    case Op::release: return op_release(s, id, a);
    case Op::status: return op_status(s, id, a);
    case Op::hits: return op_hits(s, id, a);
  }
}

bool Engine::expiry_arg(Session* s, uint64_t id, Args& a, size_t i, uint64_t* expiry) {
  const msgpack::object& o = a.v[i];
  const uint64_t now = now_ms();
  int64_t ttl;
  if (o.type == msgpack::type::NIL) {
    *expiry = cfg_.max_ttl_ms ? shm::expiry_from_ttl(int64_t(std::min<uint64_t>(cfg_.max_ttl_ms, INT64_MAX)), now) : 0;
    return true;
  }
  if (o.type == msgpack::type::POSITIVE_INTEGER) ttl = o.via.u64 > uint64_t(INT64_MAX) ? INT64_MAX : int64_t(o.via.u64);
  else if (o.type == msgpack::type::NEGATIVE_INTEGER) ttl = o.via.i64;
  else return a.bad(std::string("ttl must be nil or an integer (milliseconds), got ") + type_name(o));
  if (ttl > 0 && cfg_.max_ttl_ms && uint64_t(ttl) > cfg_.max_ttl_ms) ttl = int64_t(std::min<uint64_t>(cfg_.max_ttl_ms, INT64_MAX));
  *expiry = shm::expiry_from_ttl(ttl, now);
  return true;
}

// ---------------------------------------------------------------- operations

void Engine::op_hello(Session* s, uint64_t id, Args& a) {
  uint64_t version;
  if (a.v[0].type == msgpack::type::NEGATIVE_INTEGER) {
    return error(s, &id, Code::unsupported_version,
                 "protocol version " + std::to_string(a.v[0].via.i64) + "; this daemon speaks " +
                     std::to_string(kMinProtocolVersion) + " to " + std::to_string(kProtocolVersion));
  }
  if (!a.u64(0, &version, "version")) return;
  if (version < uint64_t(kMinProtocolVersion))
    return error(s, &id, Code::unsupported_version,
                 "protocol version " + std::to_string(version) + "; this daemon speaks " +
                     std::to_string(kMinProtocolVersion) + " to " + std::to_string(kProtocolVersion));
  std::string_view name;
  if (a.n > 1 && a.v[1].type != msgpack::type::NIL && !a.bytes(a.v[1], &name, "client_name")) return;
  s->protocol = int(std::min<uint64_t>(version, kProtocolVersion));
  s->name.assign(name.substr(0, 128));
  const auto& o = w_->options();
  Packer pk(s->out);
  reply::header(pk, id, Code::ok, 1);
  pk.pack_map(15);
  pack_str(pk, "protocol"), pk.pack_uint32(uint32_t(s->protocol));
  pack_str(pk, "server"), pack_str(pk, kServerName);
  pack_str(pk, "pid"), pk.pack_uint32(uint32_t(getpid()));
  pack_str(pk, "segment"), pack_str(pk, o.path);
  pack_str(pk, "posix_shm"), o.posix_shm ? pk.pack_true() : pk.pack_false();
  pack_str(pk, "layout"), pk.pack_uint32(shm::kLayoutVersion);
  pack_str(pk, "generation"), pk.pack_uint64(w_->generation());
  pack_str(pk, "key_limit"), pk.pack_uint64(cfg_.key_limit);
  pack_str(pk, "value_limit"), pk.pack_uint64(cfg_.value_limit);
  // Above value_limit and up to this, a SET goes to Redis only (redis_large_values).
  pack_str(pk, "set_value_limit"), pk.pack_uint64(set_value_limit());
  pack_str(pk, "max_frame_bytes"), pk.pack_uint64(cfg_.max_frame_bytes);
  pack_str(pk, "heartbeat_grace_ms"), pk.pack_uint64(cfg_.heartbeat_grace_ms);
  // The segment object the daemon writes (a reader checks that its mapping is
  // the same object, not a file swapped over the path), and the clock its
  // heartbeat and expiries are on (a reader in another time namespace sees
  // another CLOCK_MONOTONIC and must not trust them).
  const shm::MappedObject* seg = w_->segment_object();
  pack_str(pk, "segment_dev"), pk.pack_uint64(seg ? seg->dev() : 0);
  pack_str(pk, "segment_ino"), pk.pack_uint64(seg ? seg->ino() : 0);
  pack_str(pk, "clock_ms"), pk.pack_uint64(now_ms());
}

void Engine::op_get(Session* s, uint64_t id, Args& a) {
  std::string_view key;
  if (!a.key(0, &key)) return;
  shm::Item it;
  if (!suspended_ && table_get(key, &it)) return reply_value(s, id, it.value, it.flags, it.expiry_ms, s->protocol >= 2);
  if (tier_ && !negative_hit(key)) return redis_read(s, id, WaitKind::get, key, 0);
  reply::status(s->out, id, Code::not_found);
}

void Engine::get_many_too_large(Session* s) {
  // More than this client may leave unread anyway: drop it now instead of
  // building an unbounded reply.
  s->kill = true;
  s->close_reason = "GET_MANY reply larger than max_output_bytes (" + std::to_string(cfg_.max_output_bytes) + ")";
  counters_.slow_clients_total++;
}

void Engine::op_get_many(Session* s, uint64_t id, Args& a) {
  if (!a.array(0, "keys")) return;
  const auto& arr = a.v[0].via.array;
  std::string_view key;
  for (uint32_t i = 0; i < arr.size; ++i)  // all valid before any lookup
    if (!a.key_of(arr.ptr[i], &key)) return;
  if (tier_) return get_many_redis(s, id, arr);
  const bool fits = reply::entries(s->out, id, arr.size, cfg_.max_output_bytes,
                                   [&](uint32_t i, std::string_view* value, uint8_t* flags) {
                                     shm::Item it;
                                     if (!table_get(bytes_of(arr.ptr[i]), &it)) return false;
                                     *value = it.value, *flags = it.flags;
                                     return true;
                                   });
  if (!fits) get_many_too_large(s);
}

void Engine::op_store(Session* s, uint64_t id, Args& a, StoreIf when) {
  std::string_view key, value;
  uint64_t expiry;
  uint8_t flags = 0;
  if (!a.key(0, &key) || !a.value(1, &value, when == StoreIf::always) || !expiry_arg(s, id, a, 2, &expiry))
    return;
  if (a.n > 3 && !a.flags_of(a.v[3], &flags)) return;
  if (when == StoreIf::always && value.size() > cfg_.value_limit) {  // within set_value_limit: Redis only
    store_redis_only(key, value, flags, expiry);
    return reply::ok(s->out, id);
  }
  if (when != StoreIf::always && tier_) {
    auto d = std::make_shared<Decided>();
    d->kind = when == StoreIf::absent ? WaitKind::add : WaitKind::replace;
    d->key = key, d->value = value, d->flags = flags, d->expiry = expiry;
    return decide_in_redis(s, id, d);
  }
  if (when == StoreIf::absent) {
    add_local(s, id, key, value, flags, expiry);
    return;
  }
  if (when == StoreIf::present) return replace_local(s, id, key, value, flags, expiry);
  const shm::Status st = w_->set(key, value, flags, expiry);
  if (st != shm::Status::ok)  // limits were checked above; the table agrees
    return error(s, &id, Code::bad_args, refused(st));
  reply::ok(s->out, id);
  // The holder's SET of a leased key is its fill: conditional in Redis. The
  // holder is its process (a client may write on another connection than it
  // asked on: the Python client's write channel), not another process's write.
  int64_t fill = 0;
  uint64_t holder = 0;
  bool is_fill = tier_ && leases_.fill_of(key, &holder, &fill);
  if (is_fill && holder != s->id) {
    const Session* h = session(holder);
    is_fill = h && h->pid != 0 && h->pid == s->pid;
  }
  stored(key, value, flags, expiry, is_fill ? &fill : nullptr);
}

void Engine::stored(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry,
                    const int64_t* fill) {
  waits_.wrote(key);
  queue_store(key, value, flags, expiry, fill);  // before after_store: a lease's RELEASE must follow the SET
  after_store(key, value, flags, expiry);
}

uint64_t Engine::set_value_limit() const { return tier_ ? tier_->config().relay_max_bytes : cfg_.value_limit; }

void Engine::store_redis_only(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry) {
  // Over value_limit, within the relay bound (redis_large_values): the table
  // never holds it, and the key's older local copy (or negative entry) must
  // not be served in its place.
  w_->del(key);
  waits_.wrote(key);
  redis_only_sets_++;
  queue_store(key, value, flags, expiry);  // read-your-writes: a GET finds it in the queue until it is flushed
  after_store(key, value, flags, expiry);
}

bool Engine::add_local(Session* s, uint64_t id, std::string_view key, std::string_view value, uint8_t flags,
                       uint64_t expiry) {
  const shm::Status st = w_->add(key, value, flags, expiry);
  if (st == shm::Status::exists) {
    reply::status(s->out, id, Code::exists);
    return false;
  }
  if (st != shm::Status::ok) {
    error(s, &id, Code::bad_args, refused(st));
    return false;
  }
  reply::ok(s->out, id);
  stored(key, value, flags, expiry);
  return true;
}

void Engine::replace_local(Session* s, uint64_t id, std::string_view key, std::string_view value, uint8_t flags,
                           uint64_t expiry) {
  if (!w_->contains(key)) return reply::status(s->out, id, Code::not_found);
  const shm::Status st = w_->set(key, value, flags, expiry);
  if (st != shm::Status::ok) return error(s, &id, Code::bad_args, refused(st));
  reply::ok(s->out, id);
  stored(key, value, flags, expiry);
}

void Engine::op_ttl(Session* s, uint64_t id, Args& a) {
  std::string_view key;
  if (!a.key(0, &key)) return;
  if (tier_) {  // Redis's TTL: the local one may be bounded by redis_local_ttl_max_ms
    auto d = std::make_shared<Decided>();
    d->kind = WaitKind::ttl;
    d->key = key;
    return decide_in_redis(s, id, d);
  }
  ttl_local(s, id, key);
}

void Engine::ttl_local(Session* s, uint64_t id, std::string_view key) {
  shm::Item it;
  if (suspended_ || !w_->peek(key, &it)) return reply::status(s->out, id, Code::not_found);
  const uint64_t now = now_ms();
  reply::remaining(s->out, id, it.expiry_ms != 0, it.expiry_ms > now ? it.expiry_ms - now : 0);
}

void Engine::op_set_many(Session* s, uint64_t id, Args& a) {
  if (!a.array(0, "items")) return;
  const auto& arr = a.v[0].via.array;
  uint64_t expiry;
  // Every item well-formed before anything is stored.
  for (uint32_t i = 0; i < arr.size; ++i) {
    const msgpack::object& item = arr.ptr[i];
    if (item.type != msgpack::type::ARRAY || item.via.array.size < 2 || item.via.array.size > 3) {
      a.bad("item " + std::to_string(i) + " must be [key, value, flags]");
      return;
    }
    std::string_view b;
    uint8_t f;
    const msgpack::object* e = item.via.array.ptr;
    if (!a.bytes(e[0], &b, "key") || !a.bytes(e[1], &b, "value")) return;
    if (item.via.array.size == 3 && !a.flags_of(e[2], &f)) return;
  }
  if (!expiry_arg(s, id, a, 1, &expiry)) return;
  std::vector<std::string_view> failed;
  for (uint32_t i = 0; i < arr.size; ++i) {
    const msgpack::object* e = arr.ptr[i].via.array.ptr;
    const std::string_view key = bytes_of(e[0]), value = bytes_of(e[1]);
    const uint8_t flags = arr.ptr[i].via.array.size == 3 ? uint8_t(e[2].via.u64) : 0;
    if (key.size() <= cfg_.key_limit && tier_ && redis::redis_only(tier_->config(), value.size())) {
      store_redis_only(key, value, flags, expiry);
      continue;
    }
    if (key.size() > cfg_.key_limit || value.size() > cfg_.value_limit ||
        w_->set(key, value, flags, expiry) != shm::Status::ok) {
      failed.push_back(key);
      continue;
    }
    waits_.wrote(key);
    queue_store(key, value, flags, expiry);
    after_store(key, value, flags, expiry);
  }
  Packer pk(s->out);
  reply::header(pk, id, Code::ok, 1);
  pk.pack_array(uint32_t(failed.size()));
  for (auto k : failed) pack_bytes(pk, k);
}

void Engine::op_delete(Session* s, uint64_t id, Args& a) {
  std::string_view key;
  if (!a.key(0, &key)) return;
  // The reply says whether this host had the key; Redis drops it in any case.
  reply::status(s->out, id, w_->del(key) == shm::Status::ok ? Code::ok : Code::not_found);
  waits_.wrote(key);
  if (tier_) tier_->del(key);
}

void Engine::op_delete_many(Session* s, uint64_t id, Args& a) {
  if (!a.array(0, "keys")) return;
  const auto& arr = a.v[0].via.array;
  std::string_view key;
  for (uint32_t i = 0; i < arr.size; ++i)
    if (!a.key_of(arr.ptr[i], &key)) return;
  uint64_t deleted = 0;
  for (uint32_t i = 0; i < arr.size; ++i) {
    const std::string_view k = bytes_of(arr.ptr[i]);
    deleted += w_->del(k) == shm::Status::ok;
    waits_.wrote(k);
    if (tier_) tier_->del(k);
  }
  reply::count(s->out, id, deleted);
}

void Engine::op_touch(Session* s, uint64_t id, Args& a) {
  std::string_view key;
  uint64_t expiry;
  if (!a.key(0, &key) || !expiry_arg(s, id, a, 1, &expiry)) return;
  if (w_->touch(key, expiry) == shm::Status::ok) {
    reply::ok(s->out, id);
    waits_.wrote(key);
    if (tier_) tier_->touch(key, expiry);
    return;
  }
  // Not here: with Redis, the key may be there (read through it first),
  // unless a negative entry says Redis has no such key.
  if (tier_ && !negative_hit(key)) return redis_read(s, id, WaitKind::touch, key, expiry);
  reply::status(s->out, id, Code::not_found);
}

void Engine::op_incr(Session* s, uint64_t id, Args& a, bool decr) {
  std::string_view key;
  int64_t delta = 0;
  if (!a.key(0, &key) || !a.i64(1, &delta, "delta")) return;
  if (tier_) {
    auto d = std::make_shared<Decided>();
    d->kind = WaitKind::incr;
    d->key = key, d->delta = delta, d->decr = decr;
    return decide_in_redis(s, id, d);
  }
  incr_local(s, id, key, delta, decr);
}

void Engine::incr_local(Session* s, uint64_t id, std::string_view key, int64_t delta, bool decr) {
  int64_t result = 0;
  const shm::Status st = decr ? w_->decr(key, delta, &result) : w_->incr(key, delta, &result);
  switch (st) {
    case shm::Status::ok: {
      reply::number(s->out, id, result);
      waits_.wrote(key);
      if (!leases_.empty() || waits_.polls() || tier_) {
        shm::Item it;
        if (w_->get(key, &it)) {
          const std::string k(key), val(it.value);
          const uint8_t flags = it.flags;
          const uint64_t expiry = it.expiry_ms;
          queue_store(k, val, flags, expiry);
          after_store(k, val, flags, expiry);
        }
      }
      return;
    }
    case shm::Status::not_found: return reply::status(s->out, id, Code::not_found);
    case shm::Status::not_integer: return incr_error(s, id, Code::not_integer, decr);
    case shm::Status::out_of_range: return incr_error(s, id, Code::out_of_range, decr);
    default:
      return error(s, &id, Code::bad_args, refused(st));
  }
}

void Engine::op_has_key(Session* s, uint64_t id, Args& a) {
  std::string_view key;
  if (!a.key(0, &key)) return;
  if (!suspended_ && w_->contains(key)) return reply::ok(s->out, id);
  if (tier_ && !negative_hit(key)) return redis_read(s, id, WaitKind::has_key, key, 0);
  reply::status(s->out, id, Code::not_found);
}

void Engine::op_clear(Session* s, uint64_t id, Args& a) {
  std::string_view prefix;
  if (a.n > 0 && a.v[0].type != msgpack::type::NIL && !a.bytes(a.v[0], &prefix, "prefix")) return;
  if (prefix.empty() && pending_clears_.empty()) {
    // Everything, with no CLEAR in progress: the table's epoch moves on
    // (O(1)) and the count is the live entries at this moment. Behind
    // pending prefix CLEARs it joins their pass instead, so that each of
    // them still reports what it removed.
    const uint64_t removed = w_->drop_all();
    waits_.wrote_all();
    if (tier_) tier_->clear(prefix);
    finish_scans();  // visits in progress are complete: nothing is left to see
    spdlog::debug("conn {}: CLEAR of everything: {} entries", s->id, removed);
    return reply::count(s->out, id, removed);
  }
  // The table keeps the removed counts of this many clears, and a bucket's
  // cost can grow with the clears pending: bound them.
  if (pending_clears_.size() >= kMaxPendingClears)
    return error(s, &id, Code::too_many_requests,
                 std::to_string(kMaxPendingClears) + " CLEARs are already in progress");
  // It joins the pass in progress, if any: the table applies every pending
  // clear to a bucket in one visit, and to a bucket a later write touches
  // before that write, so it removes exactly what was present when received.
  const uint64_t cid = w_->clear_begin(prefix);
  waits_.wrote_all();
  if (tier_) tier_->clear(prefix);  // SCAN + UNLINK under redis_prefix + prefix, write-behind
  spdlog::debug("conn {}: CLEAR started (prefix of {} bytes)", s->id, prefix.size());
  start_clear(s, id, cid);
}

void Engine::op_delete_pattern(Session* s, uint64_t id, Args& a) {
  std::string_view pattern;
  if (!a.bytes(a.v[0], &pattern, "pattern")) return;
  if (pending_clears_.size() >= kMaxPendingClears)
    return error(s, &id, Code::too_many_requests,
                 std::to_string(kMaxPendingClears) + " CLEARs are already in progress");
  // A CLEAR of the keys matching the pattern: the same pass, the same guarantees.
  const uint64_t cid = w_->clear_begin_match(pattern);
  waits_.wrote_all();
  if (tier_) tier_->clear_match(pattern);  // SCAN MATCH redis_prefix + pattern + UNLINK, write-behind
  spdlog::debug("conn {}: DELETE_PATTERN started (pattern of {} bytes)", s->id, pattern.size());
  start_clear(s, id, cid);
}

void Engine::start_clear(Session* s, uint64_t id, uint64_t clear_id) {
  pending_clears_.push_back({s->id, id, clear_id});
  s->outstanding++;
  first_slice();
}

void Engine::first_slice() {
  // A small table clears (or is scanned) within this turn, from the
  // first-slice budget all CLEARs and SCANs share until the loop's next
  // clear_work(); a large one, or one that finds the budget spent, continues
  // from the loop.
  if (clear_first_slice_left_us_ > 0) {
    clear_first_slice_left_us_ -= std::min(clear_first_slice_left_us_, clear_slice(clear_first_slice_left_us_));
    if (!clears_pending()) return;
  }
  if (hooks_.work_pending) hooks_.work_pending();
}

void Engine::op_scan(Session* s, uint64_t id, Args& a) {
  uint64_t cursor, count;
  std::string_view pattern;
  if (!a.u64(0, &cursor, "cursor") || !a.bytes(a.v[1], &pattern, "pattern") || !a.u64(2, &count, "count")) return;
  if (pattern.size() > cfg_.key_limit)
    return (void)a.over_limit(Code::key_too_long, "pattern", pattern.size(), cfg_.key_limit);
  if (cursor == 0) {
    size_t mine = 0;
    for (const auto& [c, sc] : scans_) mine += sc.session == s->id;
    if (mine >= kMaxScansPerSession)
      return error(s, &id, Code::too_many_requests,
                   std::to_string(kMaxScansPerSession) + " SCANs are in progress on this connection");
    cursor = w_->visit_begin(pattern);  // visits every entry present now that matches
    scans_[cursor].session = s->id;
  } else {
    auto it = scans_.find(cursor);
    // Any connection may go on with a cursor (a client's pool hands out
    // another one); the scan ends when the connection that began it closes.
    if (it == scans_.end()) return reply::status(s->out, id, Code::not_found);
    if (it->second.waiting)
      return error(s, &id, Code::bad_args, "a SCAN of cursor " + std::to_string(cursor) + " is already waiting");
    if (count == 0) {  // the client ends the scan early
      if (w_->clear_done(cursor)) w_->clear_take(cursor);
      else orphan_visits_.push_back(cursor);
      scans_.erase(it);
      return reply::scan(s->out, id, 0, {}, 0);
    }
  }
  Scan& sc = scans_[cursor];
  sc.waiting = true;
  sc.asker = s->id;
  sc.req = id;
  sc.count = uint32_t(std::clamp<uint64_t>(count, 1, kMaxScanCount));
  s->outstanding++;
  if (answer_scan(cursor)) return;
  first_slice();
}

bool Engine::answer_scan(uint64_t cursor) {
  auto it = scans_.find(cursor);
  if (it == scans_.end() || !it->second.waiting) return false;
  Scan& sc = it->second;
  const bool done = w_->clear_done(cursor);
  if (!done && sc.keys.size() < sc.count) return false;
  const size_t n = std::min<size_t>(sc.count, sc.keys.size());
  const bool finished = done && n == sc.keys.size();
  if (Session* t = session(sc.asker)) {
    reply::scan(t->out, sc.req, finished ? 0 : cursor, sc.keys, n);
    t->outstanding--;
    mark_dirty(t);
  }
  sc.keys.erase(sc.keys.begin(), sc.keys.begin() + ptrdiff_t(n));
  sc.waiting = false;
  if (finished) {
    w_->clear_take(cursor);
    scans_.erase(it);
  }
  return true;
}

void Engine::finish_scans() {
  for (auto it = scans_.begin(); it != scans_.end();) {
    const uint64_t cursor = it->first;
    ++it;  // answer_scan may erase this one
    answer_scan(cursor);
  }
  std::erase_if(orphan_visits_, [this](uint64_t v) { return w_->clear_done(v) && (w_->clear_take(v), true); });
}

bool Engine::visits_running() const {
  for (const auto& [cursor, sc] : scans_)
    if (!w_->clear_done(cursor)) return true;
  for (uint64_t v : orphan_visits_)
    if (!w_->clear_done(v)) return true;
  return false;
}

bool Engine::clear_work(uint64_t budget_us) {
  clear_first_slice_left_us_ = clear_first_slice_us_;  // a new loop turn
  if (!pending_clears_.empty()) clear_slice(budget_us);
  else if (visits_running()) clear_slice(std::min(budget_us, kScanSliceUs));  // SCANs alone: about 1 ms a turn
  return !clears_pending();
}

uint64_t Engine::clear_slice(uint64_t budget_us) {
  // A bucket may be matched against every pending clear it has not seen
  // (when their prefixes have many lengths), so the buckets per step shrink
  // as clears pile up: a step stays a few tens of microseconds and the budget
  // is kept however many clears are pending.
  const size_t step = std::max<size_t>(8, 1024 / std::max<size_t>(1, pending_clears_.size()));
  const uint64_t t0 = slice_clock_();
  uint64_t used = 0;
  bool done;
  do {
    done = w_->clear_step(step);
    used = slice_clock_() - t0;
  } while (!done && used < budget_us);
  finish_clears();
  finish_scans();
  return used;
}

void Engine::finish_clears() {
  auto it = pending_clears_.begin();
  while (it != pending_clears_.end()) {
    if (!w_->clear_done(it->clear_id)) {
      ++it;
      continue;
    }
    const uint64_t removed = w_->clear_take(it->clear_id);
    if (Session* s = session(it->session)) {
      reply::count(s->out, it->req, removed);
      s->outstanding--;
      mark_dirty(s);
    }
    it = pending_clears_.erase(it);
  }
}

// ---------------------------------------------------------------- locks

void Engine::op_lock(Session* s, uint64_t id, Args& a, redis::LockOp op) {
  auto d = std::make_shared<Decided>();
  d->kind = WaitKind::lock;
  d->lock_op = op;
  std::string_view key, token;
  if (!a.key(0, &key)) return;
  if (op != redis::LockOp::query && !a.bytes(a.v[1], &token, "token")) return;
  uint64_t ms = cfg_.max_lock_ms;
  if (op == redis::LockOp::acquire && a.v[2].type != msgpack::type::NIL && !a.u64(2, &ms, "ttl")) return;
  if (op == redis::LockOp::extend) {
    if (!a.u64(2, &ms, "ms")) return;
    if (a.v[3].type != msgpack::type::BOOLEAN) return (void)a.bad("replace must be a boolean");
    if (a.v[3].via.boolean) d->lock_op = redis::LockOp::extend_replace;
  }
  d->key = key, d->value = token, d->lease_ms = std::clamp<uint64_t>(ms, 1, cfg_.max_lock_ms);
  // With Redis, only Redis decides (never this host, whatever redis_down says).
  if (tier_) return decide_in_redis(s, id, d);
  lock_local(s, id, *d);
}

void Engine::lock_local(Session* s, uint64_t id, const Decided& d) {
  const uint64_t now = now_ms();
  bool ok = false;
  switch (d.lock_op) {
    case redis::LockOp::acquire:
      if (locks_.acquire(d.key, d.value, now + d.lease_ms, now)) return reply::ok(s->out, id);
      return reply::status(s->out, id, Code::exists);
    case redis::LockOp::release: ok = locks_.release(d.key, d.value, now); break;
    case redis::LockOp::query: {
      std::string token;
      uint64_t expiry;
      if (locks_.query(d.key, now, &token, &expiry)) return reply::lock_holder(s->out, id, token, expiry - now);
      break;
    }
    default:
      ok = locks_.extend(d.key, d.value, d.lease_ms, d.lock_op == redis::LockOp::extend_replace,
                         now + cfg_.max_lock_ms, now);
  }
  reply::status(s->out, id, ok ? Code::ok : Code::not_found);
}

void Engine::op_lease(Session* s, uint64_t id, Args& a) {
  std::string_view key;
  uint64_t lease_ms, wait_ms;
  if (!a.key(0, &key) || !a.u64(1, &lease_ms, "lease_ms") || !a.u64(2, &wait_ms, "wait_ms")) return;
  lease_ms = std::clamp<uint64_t>(lease_ms, 1, cfg_.max_lease_ms);
  wait_ms = std::min(wait_ms, cfg_.max_wait_ms);
  shm::Item it;
  if (!suspended_ && w_->get(key, &it)) return reply_value(s, id, it.value, it.flags, it.expiry_ms, true);
  // With Redis, leases are decided there, unless this host decided one while
  // Redis was unreachable: its waiters then queue here as without Redis.
  if (tier_ && !leases_.local_lease(key)) {
    auto d = std::make_shared<Decided>();
    d->kind = WaitKind::lease;
    d->key = key, d->token = leases_.next_token(), d->lease_ms = lease_ms, d->wait_deadline = now_ms() + wait_ms;
    return decide_in_redis(s, id, d);
  }
  lease_local(s, id, key, lease_ms, wait_ms);
}

void Engine::lease_local(Session* s, uint64_t id, std::string_view key, uint64_t lease_ms, uint64_t wait_ms) {
  bool timed_out;
  const uint64_t token = leases_.acquire(key, s->id, id, lease_ms, wait_ms, now_ms(), &timed_out);
  if (token != 0) {
    reply::leased(s->out, id, token);
  } else if (timed_out) {
    reply::status(s->out, id, Code::timeout);
    return;
  } else {
    s->outstanding++;
  }
  if (hooks_.deadlines_changed) hooks_.deadlines_changed();
}

void Engine::op_release(Session* s, uint64_t id, Args& a) {
  std::string_view key;
  uint64_t token;
  if (!a.key(0, &key) || !a.u64(1, &token, "token")) return;
  std::vector<Leases::Event> ev;
  const bool ok = leases_.release(key, token, now_ms(), &ev);
  reply::status(s->out, id, ok ? Code::ok : Code::not_found);
  apply_events(ev);
  if (ok && hooks_.deadlines_changed) hooks_.deadlines_changed();
}

void Engine::after_store(std::string_view key, std::string_view value, uint8_t flags, uint64_t expiry) {
  wake_pollers(key);
  if (leases_.empty()) return;
  std::vector<Leases::Waiter> ws;
  uint64_t redis_token = 0;
  if (!leases_.take_waiters(key, &ws, &redis_token)) return;
  // The SET was queued before this: the RELEASE follows it to Redis.
  if (redis_token && tier_) tier_->release(key, redis_token, [](const redis::AtomicResult&) {});
  lease_sets_++;
  for (const auto& w : ws) {
    Session* t = session(w.conn);
    if (!t) continue;
    reply_value(t, w.req, value, flags, expiry, true);
    t->outstanding--;
    mark_dirty(t);
  }
  if (hooks_.deadlines_changed) hooks_.deadlines_changed();
}

void Engine::apply_events(const std::vector<Leases::Event>& ev) {
  for (const auto& e : ev) {
    if (e.kind == Leases::Event::ended) {
      // A lease held in Redis ended without a value: free it for every host.
      if (tier_) tier_->release(e.key, e.token, [](const redis::AtomicResult&) {});
      wake_pollers(e.key);
      continue;
    }
    Session* t = session(e.conn);
    if (!t) continue;
    if (e.kind == Leases::Event::granted) reply::leased(t->out, e.req, e.token);
    else reply::status(t->out, e.req, Code::timeout);
    t->outstanding--;
    mark_dirty(t);
  }
}

void Engine::on_deadlines() {
  std::vector<Leases::Event> ev;
  const uint64_t now = now_ms();
  leases_.expire(now, &ev);
  apply_events(ev);
  expire_waits(now);
}

uint64_t Engine::next_deadline() const {
  return std::min(leases_.next_deadline(), waits_.next_deadline());
}

void Engine::begin_shutdown() {
  if (stopping_) return;
  stopping_ = true;
  w_->set_authoritative(false);  // a stopping daemon answers nothing for sure
  while (!w_->clear_step(1 << 16)) {
  }
  finish_clears();
  finish_scans();
  cancel_waits(0);  // every Redis wait: SHUTTING_DOWN
  std::vector<Leases::Waiter> ws;
  std::vector<std::pair<std::string, uint64_t>> held;
  leases_.drain(&ws, &held);
  // Leases this host held in Redis: other hosts need not wait for them to lapse.
  if (tier_)
    for (const auto& [k, token] : held) tier_->release(k, token, [](const redis::AtomicResult&) {});
  for (const auto& w : ws) {
    Session* t = session(w.conn);
    if (!t) continue;
    const uint64_t req = w.req;
    error(t, &req, Code::shutting_down, "the daemon is stopping");
    t->outstanding--;
    mark_dirty(t);
  }
}

// ---------------------------------------------------------------- status

void Engine::collect(MetricValue out[kMetricCount]) const {
  const shm::WriterStats st = w_->stats();
  auto set = [&](Metric m, uint64_t v) { out[size_t(m)].count = v; };
  set(Metric::up, 1);
  set(Metric::uptime_seconds, (now_ms() - started_ms_) / 1000);
  set(Metric::generation, w_->generation());
  set(Metric::memory_total_bytes, st.segment_bytes);
  set(Metric::memory_data_bytes, st.data_bytes);
  set(Metric::memory_used_bytes, st.item_bytes);
  set(Metric::memory_free_bytes, st.data_bytes > st.item_bytes ? st.data_bytes - st.item_bytes : 0);
  set(Metric::entries, st.entries);
  // A miss counts once, where it was answered: the daemon's own, plus the
  // definite misses readers answered without asking (their fall-throughs
  // reach the daemon and count there).
  const uint64_t hits = st.get_hits + st.reader_hits, misses = st.gets - st.get_hits + st.reader_local_misses;
  set(Metric::hits_total, hits);
  set(Metric::shm_hits_total, st.reader_hits);
  set(Metric::daemon_hits_total, st.get_hits);
  set(Metric::misses_total, misses);
  out[size_t(Metric::hit_ratio)].real = hits + misses ? double(hits) / double(hits + misses) : 0.0;
  const HitWindow::Ratio recent = hit_window_.sample(started_ms_, now_ms(), hits, misses);
  out[size_t(Metric::hit_ratio_1m)].real = recent.ratio;
  set(Metric::hit_ratio_1m_window_seconds, (recent.window_ms + 500) / 1000);
  set(Metric::shm_misses_total, st.reader_misses);
  set(Metric::shm_busy_total, st.reader_busy);
  set(Metric::shm_local_misses_total, st.reader_local_misses);
  set(Metric::reader_processes, st.reader_processes);
  set(Metric::shm_authoritative, (w_->flags() & shm::kFlagAuthoritative) != 0);
  set(Metric::negative_entries, st.negatives);
  set(Metric::negative_hits_total, negative_hits_);
  set(Metric::negative_installs_skipped_total, negative_skipped_);
  set(Metric::sets_redis_only_total, redis_only_sets_);
  set(Metric::sets_total, st.sets);
  set(Metric::adds_total, st.adds);
  set(Metric::deletes_total, st.deletes);
  set(Metric::touches_total, st.touches);
  set(Metric::incrs_total, st.incrs);
  set(Metric::evictions_total, st.evictions);
  set(Metric::expirations_total, st.expirations);
  set(Metric::index_evictions_total, st.index_evictions);
  set(Metric::clears_total, st.clears);
  set(Metric::cleared_total, st.cleared);
  set(Metric::connections_open, sessions_.size());
  set(Metric::connections_total, counters_.connections_total);
  set(Metric::connections_refused_total, counters_.refused_total);
  set(Metric::slow_clients_total, counters_.slow_clients_total);
  set(Metric::requests_total, requests_total_);
  set(Metric::errors_total, errors_total_);
  set(Metric::bytes_received_total, counters_.bytes_received_total);
  set(Metric::bytes_sent_total, counters_.bytes_sent_total);
  const shm::StartReport& start = w_->start_report();
  set(Metric::start_warm, start.warm);
  set(Metric::start_kept_entries, start.kept);
  set(Metric::start_dropped_entries, start.dropped_total());
  set(Metric::leases_active, leases_.active());
  set(Metric::lease_waiters, leases_.waiting() + waits_.polls());
  set(Metric::leases_granted_total, leases_.granted_total());
  set(Metric::lease_timeouts_total, leases_.timeouts_total() + redis_lease_timeouts_);
  set(Metric::clears_pending, pending_clears_.size());
  out[size_t(Metric::loop_lag_max_ms)].real = counters_.loop_lag_max_ms;
  out[size_t(Metric::loop_lag_max_ms)].count = uint64_t(counters_.loop_lag_max_ms);
}

// ---------------------------------------------------------------- hit regions

void Engine::op_hits(Session* s, uint64_t id, Args&) {
  const int fd = take_fd_ ? take_fd_(s) : -1;
  if (fd < 0)
    return error(s, &id, Code::bad_args,
                 "HITS carries the hit region's file descriptor (SCM_RIGHTS, in the sendmsg of the request)");
  if (regions_.count(s->id)) {
    ::close(fd);
    return error(s, &id, Code::bad_args, "this connection has registered its hit region already");
  }
  std::unique_ptr<shm::HitSource> src;
  std::string why;
  if (shm::HitSource::adopt(fd, now_ms(), &src, &why) != 0) {  // closes fd
    spdlog::info("conn {} (uid {} pid {}): hit region refused: {}", s->id, s->uid, s->pid, why);
    return error(s, &id, Code::bad_args, "hit region refused: " + why);
  }
  regions_[s->id] = std::move(src);
  w_->set_reader_processes(uint32_t(regions_.size()));
  spdlog::debug("conn {}: hit region registered", s->id);
  reply::ok(s->out, id);
}

bool Engine::poll_region(shm::HitSource* src, size_t max_samples) {
  shm::HitDeltas d;
  hit_ways_.clear();
  const bool ok = src->poll(w_->generation(), w_->way_index_limit(), now_ms(), &hit_ways_, &d);
  w_->note_hits(hit_ways_.data(), hit_ways_.size());
  w_->note_reader_counts(d.hits, d.misses, d.busy, d.local_misses);
  sample_hits(hit_ways_, max_samples, d.hits);
  return ok;
}

bool Engine::table_get(std::string_view key, shm::Item* it) {
  const bool hit = w_->get(key, it);
  if (!key_stats_.enabled()) return hit;
  if (hit) key_stats_.hit(key, 1, now_ms());
  else key_stats_.miss(key, now_ms());
  return hit;
}

// At most max_samples entries, evenly spaced; together they stand for the
// region's hits since its last read (its counter, when the ring overflowed:
// more hits than kHitRing between two reads), so the tick's cost is bounded
// whatever the readers do and the prefixes' hits still add up.
void Engine::sample_hits(const std::vector<uint32_t>& ways, size_t max_samples, uint64_t hits) {
  if (!key_stats_.enabled() || !view_ || ways.empty() || max_samples == 0) return;
  const size_t stride = (ways.size() + max_samples - 1) / max_samples;
  const size_t samples = (ways.size() + stride - 1) / stride;
  const uint64_t total = std::max<uint64_t>(hits, ways.size());
  const uint64_t base = total / samples, extra = total % samples;  // the first `extra` samples weigh one more
  const uint64_t now = now_ms();
  for (size_t i = 0, n = 0; i < ways.size(); i += stride, ++n)
    if (view_->key_at(ways[i], now, &key_scratch_)) key_stats_.hit(key_scratch_, base + (n < extra), now);
}

void Engine::key_stats_status(msgpack::packer<OutBuffer>& pk) {
  const uint64_t now = now_ms();
  pack_str(pk, "key_stats");
  pk.pack_map(6);
  pack_str(pk, "enabled"), key_stats_.enabled() ? pk.pack_true() : pk.pack_false();
  pack_str(pk, "prefix_depth"), pk.pack_uint32(key_stats_.depth());
  pack_str(pk, "separators"), pack_str(pk, key_stats_.separators());
  pack_str(pk, "span_ms"), pk.pack_uint64(key_stats_.enabled() ? key_stats_.span_ms(now) : 0);
  pack_str(pk, "hot_keys");
  pack_rows(pk, key_stats_.hot_keys(KeyStats::kReportKeys, now), [](Packer& p, const auto& k) {
    p.pack_array(2), pack_bytes(p, k.key), p.pack_uint64(k.hits);
  });
  pack_str(pk, "prefixes");
  pack_rows(pk, key_stats_.prefixes(KeyStats::kReportPrefixes, now), [](Packer& p, const auto& x) {
    p.pack_array(3), pack_bytes(p, x.prefix), p.pack_uint64(x.hits), p.pack_uint64(x.misses);
  });
}

size_t Engine::poll_hits(size_t max_regions) {
  size_t n = 0;
  // key_stats' share of the tick: kSamplesPerTick ring entries for all the
  // regions read, kSamplesPerPoll at most for one (key_stats.h).
  const size_t polled = std::max<size_t>(1, std::min(max_regions, regions_.size()));
  const size_t per_region = std::clamp<size_t>(KeyStats::kSamplesPerTick / polled, 1, KeyStats::kSamplesPerPoll);
  auto it = regions_.lower_bound(regions_cursor_);
  while (n < max_regions && n < regions_.size()) {
    if (it == regions_.end()) it = regions_.begin();
    ++n;
    if (poll_region(it->second.get(), per_region)) {
      ++it;
    } else {
      spdlog::info("conn {}: hit region unreadable; dropped", it->first);
      it = regions_.erase(it);
      w_->set_reader_processes(uint32_t(regions_.size()));
    }
  }
  regions_cursor_ = it == regions_.end() ? 0 : it->first;
  return n;
}

// STATUS "start": how this daemon got its table (adopted, new, or new with the old one's entries copied) and why.
static void pack_start(Packer& pk, const shm::StartReport& r) {
  pack_str(pk, "start");
  pk.pack_map(8);
  pack_str(pk, "warm"), r.warm ? pk.pack_true() : pk.pack_false();
  pack_str(pk, "copied"), r.copied ? pk.pack_true() : pk.pack_false();
  pack_str(pk, "reason"), pack_str(pk, r.reason);
  pack_str(pk, "reused_in_place"), r.reused_in_place ? pk.pack_true() : pk.pack_false();
  pack_str(pk, "clean_shutdown"), r.clean_shutdown ? pk.pack_true() : pk.pack_false();
  pack_str(pk, "kept"), pk.pack_uint64(r.kept);
  pack_str(pk, "odd_buckets"), pk.pack_uint64(r.odd_buckets);
  pack_str(pk, "dropped");
  pk.pack_map(uint32_t(shm::Drop::kCount));
  for (size_t i = 0; i < size_t(shm::Drop::kCount); ++i)
    pack_str(pk, shm::drop_name(shm::Drop(i))), pk.pack_uint64(r.dropped[i]);
}

void Engine::op_status(Session* s, uint64_t id, Args&) {
  MetricValue vals[kMetricCount];
  collect(vals);
  const MetricSpec* table = metric_table();
  Packer pk(s->out);
  reply::header(pk, id, Code::ok, 1);
  // The metrics, then: key_stats, version, pid, uptime_s, start, config, connections.
  constexpr uint32_t kStatusExtras = 7;
  pk.pack_map(uint32_t(kMetricCount + kStatusExtras + (tier_ ? kRedisMetricCount + 1 : 0)));
  for (size_t i = 0; i < kMetricCount; ++i) {
    pack_str(pk, table[i].name);
    if (table[i].unit == MetricUnit::ratio || table[i].unit == MetricUnit::millis) pk.pack_double(vals[i].real);
    else pk.pack_uint64(vals[i].count);
  }
  if (tier_) redis_status(pk);
  key_stats_status(pk);
  pack_str(pk, "version"), pack_str(pk, kVersion);
  pack_str(pk, "pid"), pk.pack_uint32(uint32_t(getpid()));
  pack_str(pk, "uptime_s"), pk.pack_uint64((now_ms() - started_ms_) / 1000);
  pack_start(pk, w_->start_report());
  pack_str(pk, "config");
  const auto& opts = option_table();
  pk.pack_map(uint32_t(opts.size()));
  for (const auto& o : opts) {
    pack_str(pk, o.name);
    // The segment in use: not the configured name when that was squatted
    // (Writer::name_notice), so that `nearcache memory` maps the right one.
    if (std::string_view(o.name) == "segment") {
      pack_str(pk, w_->options().path);
      continue;
    }
    switch (o.type) {
      case OptType::boolean: option_bool(cfg_, o) ? pk.pack_true() : pk.pack_false(); break;
      case OptType::size:
      case OptType::count: pk.pack_uint64(option_number(cfg_, o)); break;
      default: pack_str(pk, format_option(cfg_, o)); break;
    }
  }
  pack_str(pk, "connections");
  pk.pack_array(uint32_t(sessions_.size()));
  std::vector<const Session*> list;
  for (const auto& [sid, t] : sessions_) list.push_back(t);
  std::sort(list.begin(), list.end(), [](const Session* x, const Session* y) { return x->id < y->id; });
  for (const Session* t : list) {
    pk.pack_map(7);
    pack_str(pk, "id"), pk.pack_uint64(t->id);
    pack_str(pk, "uid"), pk.pack_uint32(t->uid);
    pack_str(pk, "gid"), pk.pack_uint32(t->gid);
    pack_str(pk, "pid"), pk.pack_int32(t->pid);
    pack_str(pk, "requests"), pk.pack_uint64(t->requests);
    pack_str(pk, "outstanding"), pk.pack_uint64(t->outstanding);
    pack_str(pk, "name"), pack_str(pk, t->name);
  }
}

}  // namespace nearcache::daemon
