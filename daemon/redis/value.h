// daemon/redis/value.h — how a table entry is stored as a Redis value.
//
// An entry with flags 0 (every value of nearcache's default serializer) is
// stored as its exact bytes, so any Redis client reads the same msgpack, and
// a value another tool writes in that format is served as is. An entry with
// flags (e.g. bit 0: written by a non-default serializer) cannot be told
// apart by its bytes, so it is wrapped in a msgpack ext of type 126 whose
// payload is the flags byte followed by the value. nearcache's serializer
// never writes ext 126 (its codes are 1-10 and 64), so a stored value
// starting with that ext is always an envelope.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "msgpack_int.h"  // shm/, header only

namespace nearcache::redis {

inline constexpr int8_t kEnvelopeExt = 126;

// The Redis value for (value, flags).
std::string encode_value(std::string_view value, uint8_t flags);
// Splits a Redis value into (value, flags); a value that is not exactly one
// envelope is returned as is with flags 0.
void decode_value(std::string_view stored, std::string_view* value, uint8_t* flags);

// msgpack integers exactly as the table's INCR reads and writes them.
using shm::encode_msgpack_int;
using shm::parse_msgpack_int;

}  // namespace nearcache::redis
