// daemon/redis/value.h — how a table entry (value bytes, flags) is stored as
// a Redis value, and how a Redis value reads back; doc/redis.md "Values in
// Redis" is the operator's version of this.
//
// Written (version 2):
//   - bare: flags 0 and the bytes are exactly one well-formed msgpack object
//     that is not a version-1 envelope: stored as they are, so any Redis
//     client reads the same msgpack, INCR works on them, and hosts of
//     version 1 read them as before;
//   - v2 envelope: everything else (flags != 0, or bytes that are not one
//     msgpack object, or that look like a version-1 envelope):
//     "\xc1" "nc" "\x02" flags value. 0xc1 is the one byte msgpack never
//     uses, so no bare value and no version-1 envelope starts with it.
// Read:
//   - v2 envelope -> (value, flags);
//   - v1 envelope (msgpack ext 126 whose payload is flags + value, exactly
//     the whole string; what version 1 wrote for flags != 0) -> (value, flags);
//   - bare: exactly one well-formed msgpack object -> (bytes, 0);
//   - foreign: anything else (not msgpack, another version's envelope, a
//     truncated one) -> (bytes, kFlagForeign): a value nearcache did not
//     write; the client decides (the Django backend answers a miss).
// Every (value, flags) written reads back exactly. A version-1 reader sees a
// v2 envelope as bare bytes with flags 0 that start with 0xc1: no msgpack
// decoder accepts them, so its client answers a miss, never other data.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "msgpack_int.h"  // shm/, header only

namespace nearcache::redis {

inline constexpr int8_t kEnvelopeExt = 126;       // version 1: msgpack ext type of the envelope
inline constexpr std::string_view kEnvelopeV2 = {"\xc1nc\x02", 4};  // version 2: magic + version
inline constexpr size_t kEnvelopeV2Header = 5;    // magic, version, flags
// The flag a foreign value is answered with (doc/protocol.md, "flags").
inline constexpr uint8_t kFlagForeign = 0x80;

enum class Stored { bare, v1, v2, foreign };

// The Redis value for (value, flags), in envelope `version` 2 (above) or 1
// (redis_value_format = 1, for a rolling upgrade: flags 0 bare whatever the
// bytes, other flags in version 1's envelope; flags-0 bytes that are not one
// msgpack value then read back as foreign, and ones that look like a
// version-1 envelope as other bytes and flags, as in version 1).
std::string encode_value(std::string_view value, uint8_t flags, uint64_t version = 2);
// Splits a Redis value into (value, flags); *value points into `stored`.
// A foreign value is returned whole with flags kFlagForeign.
Stored decode_value(std::string_view stored, std::string_view* value, uint8_t* flags);

// Whether s is exactly one well-formed msgpack object (any nesting; no
// check of str contents or ext types).
bool is_one_msgpack(std::string_view s);

// msgpack integers exactly as the table's INCR reads and writes them.
using shm::encode_msgpack_int;
using shm::parse_msgpack_int;

}  // namespace nearcache::redis
