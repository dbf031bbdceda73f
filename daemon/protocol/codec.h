// daemon/protocol/codec.h — msgpack helpers and the clock that the engine
// (engine.cc, engine_redis.cc) and the reply shapes (reply.h) share to read
// requests and pack replies; private to the daemon's core.
#pragma once

#include <cstdint>
#include <msgpack.hpp>
#include <string_view>

#include "clock.h"  // shm/
#include "protocol/session.h"

namespace nearcache::daemon {

using Packer = msgpack::packer<OutBuffer>;

// Keys and values may arrive as bin or str (doc/protocol.md: "bytes").
inline bool is_bytes(const msgpack::object& o) {
  return o.type == msgpack::type::STR || o.type == msgpack::type::BIN;
}

// The bytes of a bin or str object; only after is_bytes().
inline std::string_view bytes_of(const msgpack::object& o) {
  return o.type == msgpack::type::STR ? std::string_view(o.via.str.ptr, o.via.str.size)
                                      : std::string_view(o.via.bin.ptr, o.via.bin.size);
}

inline void pack_bytes(Packer& pk, std::string_view b) {
  pk.pack_bin(uint32_t(b.size()));
  pk.pack_bin_body(b.data(), uint32_t(b.size()));
}

inline void pack_str(Packer& pk, std::string_view s) {
  pk.pack_str(uint32_t(s.size()));
  pk.pack_str_body(s.data(), uint32_t(s.size()));
}

// An array of rows, each packed by row(pk, element): the shape of STATUS's
// lists (hot_keys, prefixes).
template <class Rows, class Row>
void pack_rows(Packer& pk, const Rows& rows, Row row) {
  pk.pack_array(uint32_t(rows.size()));
  for (const auto& r : rows) row(pk, r);
}

// CLOCK_MONOTONIC microseconds: request deadlines and wait times.
inline constexpr auto& mono_us = shm::monotonic_us;

}  // namespace nearcache::daemon
