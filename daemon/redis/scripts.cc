// daemon/redis/scripts.cc — see scripts.h.
#include "redis/scripts.h"

#include <hiredis/hiredis.h>

#include <memory>
#include <spdlog/spdlog.h>

namespace nearcache::redis {

namespace {

// INCR/DECR with the table's semantics (shm::Writer::incr): the value must be
// exactly one msgpack integer (any encoding, up to uint64), bare or inside
// a version-2 or version-1 envelope (value.h); the result must fit in int64
// and is written in the smallest encoding, in the same envelope (version
// kept: a version-1 host may read it), with the same flags and TTL (KEEPTTL). A missing
// key is never created. Lua numbers are doubles, exact only below 2^53, so
// the value and the delta are handled as (hi, lo) 32-bit halves; cmsgpack
// encodes results below 2^53, larger ones are packed by hand.
const char* kIncr = R"lua(
local v = redis.call('GET', KEYS[1])
if not v then return {'missing'} end
local body, flags, env = v, 0, 0
if #v >= 5 and string.sub(v, 1, 4) == '\193nc\2' then
  env, flags, body = 2, string.byte(v, 5), string.sub(v, 6)
elseif #v >= 4 and string.byte(v, 1) == 0xc7 and string.byte(v, 3) == 126 and string.byte(v, 2) + 3 == #v then
  env, flags, body = 1, string.byte(v, 4), string.sub(v, 5)
end
local n, t = #body, string.byte(body, 1)
local P32 = 4294967296
local function be(i, j)
  local x = 0
  for k = i, j do x = x * 256 + string.byte(body, k) end
  return x
end
local function split(x)
  local h = math.floor(x / P32)
  return h, x - h * P32
end
local hi, lo
if n == 0 then return {'notint'}
elseif n == 1 and t <= 0x7f then hi, lo = 0, t
elseif n == 1 and t >= 0xe0 then hi, lo = split(t - 256)
elseif t == 0xcc and n == 2 then hi, lo = 0, be(2, 2)
elseif t == 0xcd and n == 3 then hi, lo = 0, be(2, 3)
elseif t == 0xce and n == 5 then hi, lo = 0, be(2, 5)
elseif t == 0xcf and n == 9 then hi, lo = be(2, 5), be(6, 9)
elseif t == 0xd0 and n == 2 then local x = be(2, 2); if x >= 128 then x = x - 256 end; hi, lo = split(x)
elseif t == 0xd1 and n == 3 then local x = be(2, 3); if x >= 32768 then x = x - 65536 end; hi, lo = split(x)
elseif t == 0xd2 and n == 5 then local x = be(2, 5); if x >= 2147483648 then x = x - P32 end; hi, lo = split(x)
elseif t == 0xd3 and n == 9 then hi, lo = be(2, 5), be(6, 9); if hi >= 2147483648 then hi = hi - P32 end
else return {'notint'} end
lo = lo + tonumber(ARGV[2])
local carry = math.floor(lo / P32)
lo = lo - carry * P32
hi = hi + tonumber(ARGV[1]) + carry
if hi < -2147483648 or hi > 2147483647 then return {'range'} end
local out
if hi >= -2097152 and hi < 2097152 then
  out = cmsgpack.pack(hi * P32 + lo)
else
  local function u32(x)
    return string.char(math.floor(x / 16777216) % 256, math.floor(x / 65536) % 256, math.floor(x / 256) % 256, x % 256)
  end
  if hi >= 0 then out = string.char(0xcf) .. u32(hi) .. u32(lo)
  else out = string.char(0xd3) .. u32(hi + P32) .. u32(lo) end
end
local stored = out
if env == 2 then stored = '\193nc\2' .. string.char(flags) .. out
elseif env == 1 then stored = string.char(0xc7, #out + 1, 126, flags) .. out end
redis.call('SET', KEYS[1], stored, 'KEEPTTL')
redis.call('INCR', KEYS[2])
return {'ok', out, redis.call('PTTL', KEYS[1]), flags}
)lua";

// A lease decided in Redis: the value if there is one, else the lease if
// nobody holds it (SET NX PX), else who-holds-it's remaining time. A value
// longer than ARGV[3] (relay_max_stored) counts as none: it is never sent,
// and the lease holder's SET replaces it. A grant answers the key's slot
// counter (KEYS[3], "" = missing), which the holder's fill is conditional on,
// and 1 when it was granted over such a large value (its fill is a plain SET).
const char* kLease = R"lua(
local n = redis.call('STRLEN', KEYS[1])
if n <= tonumber(ARGV[3]) then
  local v = redis.call('GET', KEYS[1])
  if v then return {'value', v, redis.call('PTTL', KEYS[1])} end
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local large = 0
  if n > 0 then large = 1 end
  return {'granted', redis.call('GET', KEYS[3]) or '', large}
end
return {'held', redis.call('PTTL', KEYS[2])}
)lua";

// A lease fill (write_behind.h, "Lease fills"): the value (ARGV[1], PX
// ARGV[2] unless "") is stored and the slot counter (KEYS[2]) bumped only if
// the counter still holds ARGV[3] ("" = missing); else nothing is written.
// The counter is in the key's slot (slots.h): one master runs it on a cluster.
const char* kFill = R"lua(
local c = redis.call('GET', KEYS[2]) or ''
if c ~= ARGV[3] then return {'refused'} end
if ARGV[2] == '' then redis.call('SET', KEYS[1], ARGV[1])
else redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
redis.call('INCR', KEYS[2])
return {'ok'}
)lua";

const char* kRelease = R"lua(
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
)lua";

// One step of CLEAR: SCAN + UNLINK (never FLUSHDB: the database may be
// shared), bumping the clear counter (KEYS[1], slots.h) when it removed any.
// One UNLINK per key: on Redis Cluster one UNLINK of keys in several slots
// is refused inside a script, even on the node that holds them all.
const char* kClearStep = R"lua(
local r = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3])
local keys = r[2]
for i = 1, #keys do redis.call('UNLINK', keys[i]) end
if #keys > 0 then redis.call('INCR', KEYS[1]) end
return {r[1], #keys}
)lua";

// A read-through: STRLEN first, so that a value larger than the daemon
// relays stays in Redis (WRONGTYPE errors as GET would).
const char* kGet = R"lua(
local n = redis.call('STRLEN', KEYS[1])
if n > tonumber(ARGV[1]) then return {'large', n} end
local v = redis.call('GET', KEYS[1])
if not v then return {'missing'} end
return {'value', v, redis.call('PTTL', KEYS[1])}
)lua";

}  // namespace

const char* script_source(Script s) {
  switch (s) {
    case Script::incr: return kIncr;
    case Script::lease: return kLease;
    case Script::release: return kRelease;
    case Script::clear_step: return kClearStep;
    case Script::get: return kGet;
    case Script::fill: return kFill;
  }
  return "";
}

Scripts::Scripts(Link* link) : link_(link) {
  link_->add_setup([this](Link& l, Link::Done done) {
    auto left = std::make_shared<size_t>(kScriptCount);
    auto failed = std::make_shared<bool>(false);
    for (size_t i = 0; i < kScriptCount; ++i) {
      const bool sent = l.command({"SCRIPT", "LOAD", script_source(Script(i))}, [this, i, left, failed, done](const Reply& r) {
        if (*failed) return;
        if (r.is_error() || !r.r || r.r->type != REDIS_REPLY_STRING) {
          *failed = true;
          done(false, "SCRIPT LOAD failed: " + (r.is_error() ? r.error() : std::string("unexpected reply")));
          return;
        }
        sha_[i].assign(r.r->str, r.r->len);
        if (--*left == 0) done(true, "");
      });
      if (!sent) {
        *failed = true;
        done(false, "cannot send SCRIPT LOAD");
        return;
      }
    }
  });
}

void Scripts::reload() {
  for (size_t i = 0; i < kScriptCount; ++i)
    reloads_sent_ += link_->command({"SCRIPT", "LOAD", script_source(Script(i))}, [this, i](const Reply& r) {
      if (!r.is_error() && r.r && r.r->type == REDIS_REPLY_STRING) sha_[i].assign(r.r->str, r.r->len);
    });
}

bool Scripts::eval(Script s, const std::vector<std::string_view>& keys, const std::vector<std::string_view>& args,
                   ReplyFn cb) {
  const size_t i = size_t(s);
  const std::string nkeys = std::to_string(keys.size());
  std::vector<std::string_view> argv{"EVALSHA", sha_[i], nkeys};
  argv.insert(argv.end(), keys.begin(), keys.end());
  argv.insert(argv.end(), args.begin(), args.end());
  // What a retry needs once this call has returned.
  auto saved = std::make_shared<std::vector<std::string>>(argv.begin() + 2, argv.end());
  const uint64_t gen = link_->generation(), seq = link_->sent() + 1, reloads = reloads_sent_;
  return link_->command(argv, [this, s, saved, gen, seq, reloads, cb = std::move(cb)](const Reply& r) {
    if (!r.r || r.r->type != REDIS_REPLY_ERROR || std::string_view(r.r->str, r.r->len).substr(0, 8) != "NOSCRIPT") {
      cb(r);
      return;
    }
    noscript_total_++;
    // Safe to retry when nothing but our own SCRIPT LOADs went out after it.
    if (link_->generation() == gen && link_->sent() - (reloads_sent_ - reloads) == seq) {
      std::vector<std::string_view> argv{"EVAL", script_source(s)};
      for (const auto& a : *saved) argv.push_back(a);
      if (link_->command(argv, cb)) return;
    }
    spdlog::warn("redis: the server lost its scripts (NOSCRIPT); reloading them");
    reload();
    Reply e;
    e.fail = Reply::Fail::disconnected;
    e.why = "NOSCRIPT: Redis lost the tier's scripts while later commands were queued behind this one; not "
            "retried, to keep the command order";
    cb(e);
  });
}

}  // namespace nearcache::redis
