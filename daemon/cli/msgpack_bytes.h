// daemon/cli/msgpack_bytes.h — bytes in and out of msgpack for the CLI: what it
// packs into requests and reads back from replies and STATUS maps.
#pragma once

#include <cstdint>
#include <msgpack.hpp>
#include <string_view>

namespace nearcache::daemon {

// Keys and values go to the daemon as bin (doc/protocol.md: "bytes").
template <typename Packer>
void pack_bytes(Packer& pk, std::string_view b) {
  pk.pack_bin(uint32_t(b.size()));
  pk.pack_bin_body(b.data(), uint32_t(b.size()));
}

// The bytes of a str or bin object; empty for any other type.
inline std::string_view str_of(const msgpack::object& o) {
  if (o.type == msgpack::type::STR) return {o.via.str.ptr, o.via.str.size};
  if (o.type == msgpack::type::BIN) return {o.via.bin.ptr, o.via.bin.size};
  return {};
}

}  // namespace nearcache::daemon
