// daemon/protocol/reply.cc — the reply shapes of reply.h.
#include "protocol/reply.h"

namespace nearcache::daemon::reply {

void count(OutBuffer& out, uint64_t id, uint64_t n) {
  Packer pk(out);
  header(pk, id, Code::ok, 1);
  pk.pack_uint64(n);
}

void number(OutBuffer& out, uint64_t id, int64_t n) {
  Packer pk(out);
  header(pk, id, Code::ok, 1);
  pk.pack_int64(n);
}

void remaining(OutBuffer& out, uint64_t id, bool expires, uint64_t ms) {
  Packer pk(out);
  header(pk, id, Code::ok, 1);
  if (expires) pk.pack_uint64(ms);
  else pk.pack_nil();
}

void scan(OutBuffer& out, uint64_t id, uint64_t next_cursor, const std::deque<std::string>& keys, size_t n) {
  Packer pk(out);
  header(pk, id, Code::ok, 2);
  pk.pack_uint64(next_cursor);
  pk.pack_array(uint32_t(n));
  for (size_t i = 0; i < n; ++i) pack_bytes(pk, keys[i]);
}

void lock_holder(OutBuffer& out, uint64_t id, std::string_view token, uint64_t ttl_ms) {
  Packer pk(out);
  header(pk, id, Code::ok, 2);
  pack_bytes(pk, token);
  pk.pack_uint64(ttl_ms);
}

void leased(OutBuffer& out, uint64_t id, uint64_t token) {
  Packer pk(out);
  header(pk, id, Code::leased, 1);
  pk.pack_uint64(token);
}

void value(OutBuffer& out, uint64_t id, std::string_view value, uint8_t flags, uint64_t expiry_ms, uint64_t now_ms,
           bool with_meta) {
  Packer pk(out);
  header(pk, id, Code::ok, with_meta ? 3 : 1);
  pack_bytes(pk, value);
  if (!with_meta) return;
  pk.pack_uint8(flags);
  if (expiry_ms == 0) pk.pack_nil();
  else pk.pack_uint64(expiry_ms > now_ms ? expiry_ms - now_ms : 0);
}

void error_text(OutBuffer& out, const uint64_t* id, Code c, std::string_view message) {
  Packer pk(out);
  pk.pack_array(3);
  if (id) pk.pack_uint64(*id);
  else pk.pack_nil();
  pk.pack_uint8(uint8_t(c));
  pack_str(pk, message);
}

std::string error(OutBuffer& out, const uint64_t* id, Code c, std::string_view detail) {
  std::string message = code_name(c);
  message += ": ";
  message += detail;
  error_text(out, id, c, message);
  return message;
}

}  // namespace nearcache::daemon::reply
