// daemon/protocol/reply.h — how replies of doc/protocol.md are packed: the
// [id, status, ...] header and the reply shapes several ops share (as redis's
// addReply* and memcached's out_string). The Engine answers only through these,
// so a reply's bytes are written in one place.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <string_view>

#include "protocol/codec.h"
#include "protocol/protocol.h"

namespace nearcache::daemon::reply {

// [id, code, ...]: a reply of `payload` more elements, which the caller packs next.
// (Inline: every reply starts with it.)
inline void header(Packer& pk, uint64_t id, Code c, uint32_t payload) {
  pk.pack_array(2 + payload);
  pk.pack_uint64(id);
  pk.pack_uint8(uint8_t(c));
}
// [id, code]
inline void status(OutBuffer& out, uint64_t id, Code c) {
  Packer pk(out);
  header(pk, id, c, 0);
}
inline void ok(OutBuffer& out, uint64_t id) { status(out, id, Code::ok); }
// [id, OK, n]: CLEAR's removed entries, DELETE_MANY's deleted keys.
void count(OutBuffer& out, uint64_t id, uint64_t n);
// [id, OK, n]: INCR/DECR's result.
void number(OutBuffer& out, uint64_t id, int64_t n);
// [id, OK, ms | nil]: TTL's remaining lifetime (nil: no expiry).
void remaining(OutBuffer& out, uint64_t id, bool expires, uint64_t ms);
// SCAN: [id, OK, next_cursor, [key, ...]] with the first n of `keys`.
void scan(OutBuffer& out, uint64_t id, uint64_t next_cursor, const std::deque<std::string>& keys, size_t n);
// LOCK_QUERY: [id, OK, token, ttl_ms]
void lock_holder(OutBuffer& out, uint64_t id, std::string_view token, uint64_t ttl_ms);
// [id, LEASED, token]
void leased(OutBuffer& out, uint64_t id, uint64_t token);
// GET (protocol 2) and LEASE: [id, OK, value, flags, ttl_ms | nil] with the TTL
// left at `now_ms`; protocol 1's GET: [id, OK, value].
void value(OutBuffer& out, uint64_t id, std::string_view value, uint8_t flags, uint64_t expiry_ms, uint64_t now_ms,
           bool with_meta);

// [id | nil, code, "<CODE NAME>: <detail>"]; returns the message sent.
std::string error(OutBuffer& out, const uint64_t* id, Code c, std::string_view detail);
// The same with a message that already starts with the status name (the frame scanner's).
void error_text(OutBuffer& out, const uint64_t* id, Code c, std::string_view message);

// GET_MANY: [id, OK, [[value, flags] | nil, ...]] for `n` keys, where
// entry(i, &value, &flags) says whether key i has a value. Past `max_bytes`
// (checked after each value, so no reply grows unbounded) the partial reply is
// removed and false returned.
template <typename EntryFn>
bool entries(OutBuffer& out, uint64_t id, uint32_t n, size_t max_bytes, EntryFn&& entry) {
  const size_t start = out.bytes.size();
  Packer pk(out);
  header(pk, id, Code::ok, 1);
  pk.pack_array(n);
  for (uint32_t i = 0; i < n; ++i) {
    std::string_view v;
    uint8_t flags = 0;
    if (!entry(i, &v, &flags)) {
      pk.pack_nil();
      continue;
    }
    pk.pack_array(2);
    pack_bytes(pk, v);
    pk.pack_uint8(flags);
    if (out.bytes.size() - start > max_bytes) {
      out.bytes.resize(start);
      return false;
    }
  }
  return true;
}

}  // namespace nearcache::daemon::reply
