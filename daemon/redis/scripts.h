// daemon/redis/scripts.h — the Lua scripts the tier runs in Redis, loaded
// with SCRIPT LOAD on every new data connection and run with EVALSHA.
//
// NOSCRIPT (someone ran SCRIPT FLUSH, or a failover to a replica without the
// scripts) is retried with EVAL only when nothing was sent on the
// connection after the EVALSHA, so the retry keeps its place in the
// command order; otherwise the call fails with a clear error and the
// scripts are reloaded for the next calls.
//
// Scripts (see scripts.cc for the code):
//   incr        KEYS: value key, its slot counter (slots.h); ARGV: delta high 32 bits (signed), low 32 bits
//               -> {"ok", new value bytes (unwrapped), pttl, flags}
//                  | {"missing"} | {"notint"} | {"range"}
//   lease       KEYS: value key, lease key, its slot counter; ARGV: token, lease_ms, largest stored length
//               to return -> {"value", stored bytes, pttl} | {"granted", counter ("" = missing), large 0/1}
//               | {"held", pttl} (a longer value counts as none: large = 1)
//   fill        KEYS: value key, its slot counter; ARGV: stored bytes, PX ms ("" = none), expected counter
//               ("" = missing) -> {"ok"} stored and counted | {"refused"} the counter moved: nothing written
//   release     KEYS: lease key; ARGV: token -> 1 released | 0 not the holder
//   clear_step  KEYS: the clear counter; ARGV: cursor, MATCH pattern, COUNT -> {next cursor, keys unlinked}
//   get         KEYS: value key; ARGV: largest stored length to return
//               -> {"value", stored bytes, pttl} | {"missing"} | {"large", length}
//               (the read-through: a larger value is never sent, so the
//               client library never buffers it)
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "redis/link.h"

namespace nearcache::redis {

enum class Script { incr, lease, release, clear_step, get, fill };
inline constexpr size_t kScriptCount = 6;
const char* script_source(Script s);

class Scripts {
 public:
  // Adds a setup step to `link` that loads every script (SCRIPT LOAD).
  explicit Scripts(Link* link);

  // False when the link is not ready (cb not called).
  bool eval(Script s, const std::vector<std::string_view>& keys, const std::vector<std::string_view>& args,
            ReplyFn cb);

  uint64_t noscript_total() const { return noscript_total_; }

 private:
  void reload();
  Link* link_;
  std::array<std::string, kScriptCount> sha_;
  uint64_t noscript_total_ = 0;
  uint64_t reloads_sent_ = 0;  // SCRIPT LOADs sent by reload(): they cannot reorder anything
};

}  // namespace nearcache::redis
