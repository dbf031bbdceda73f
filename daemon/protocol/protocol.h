// daemon/protocol/protocol.h — the numbers of doc/protocol.md (ops, status codes,
// versions) and their names. Shared by the daemon, the CLI and the tests.
#pragma once

#include <cstdint>

namespace nearcache::daemon {

inline constexpr int kProtocolVersion = 2;     // the newest version spoken
inline constexpr int kMinProtocolVersion = 1;  // the oldest still served
inline constexpr const char* kServerName = "nearcached 0.1.0";
inline constexpr const char* kVersion = "0.1.0";

enum class Op : uint32_t {
  hello = 1,
  ping = 2,
  get = 3,
  get_many = 4,
  set = 5,
  add = 6,
  set_many = 7,
  del = 8,
  delete_many = 9,
  touch = 10,
  incr = 11,
  decr = 12,
  has_key = 13,
  clear = 14,
  lease = 15,
  release = 16,
  status = 17,
  hits = 18,  // registers the connection's hit region (the fd in SCM_RIGHTS)
  ttl = 19,
  replace = 20,
  scan = 21,
  delete_pattern = 22,
  lock = 23,
  unlock = 24,
  lock_extend = 25,
  lock_query = 26,
};
inline constexpr uint32_t kMaxOp = 26;

enum class Code : uint8_t {
  ok = 0,
  not_found = 1,
  exists = 2,
  leased = 3,
  timeout = 4,
  bad_frame = 16,
  frame_too_large = 17,
  unknown_op = 18,
  bad_args = 19,
  key_too_long = 20,
  value_too_large = 21,
  not_integer = 22,
  out_of_range = 23,
  not_allowed = 24,
  too_many_requests = 25,
  unavailable = 26,
  unsupported_version = 27,
  shutting_down = 28,
};

inline const char* op_name(uint32_t op) {
  static const char* const names[] = {"?",     "HELLO",       "PING",  "GET",     "GET_MANY", "SET",
                                      "ADD",   "SET_MANY",    "DELETE", "DELETE_MANY", "TOUCH", "INCR",
                                      "DECR",  "HAS_KEY",     "CLEAR", "LEASE",   "RELEASE",  "STATUS",
                                      "HITS",  "TTL",         "REPLACE", "SCAN",   "DELETE_PATTERN",
                                      "LOCK",  "UNLOCK",      "LOCK_EXTEND", "LOCK_QUERY"};
  return op <= kMaxOp ? names[op] : "?";
}

inline const char* code_name(Code c) {
  switch (c) {
    case Code::ok: return "OK";
    case Code::not_found: return "NOT_FOUND";
    case Code::exists: return "EXISTS";
    case Code::leased: return "LEASED";
    case Code::timeout: return "TIMEOUT";
    case Code::bad_frame: return "BAD_FRAME";
    case Code::frame_too_large: return "FRAME_TOO_LARGE";
    case Code::unknown_op: return "UNKNOWN_OP";
    case Code::bad_args: return "BAD_ARGS";
    case Code::key_too_long: return "KEY_TOO_LONG";
    case Code::value_too_large: return "VALUE_TOO_LARGE";
    case Code::not_integer: return "NOT_INTEGER";
    case Code::out_of_range: return "OUT_OF_RANGE";
    case Code::not_allowed: return "NOT_ALLOWED";
    case Code::too_many_requests: return "TOO_MANY_REQUESTS";
    case Code::unavailable: return "UNAVAILABLE";
    case Code::unsupported_version: return "UNSUPPORTED_VERSION";
    case Code::shutting_down: return "SHUTTING_DOWN";
  }
  return "?";
}

// Errors after which the daemon closes the connection (doc/protocol.md).
inline bool code_closes(Code c) {
  return c == Code::bad_frame || c == Code::frame_too_large || c == Code::not_allowed || c == Code::shutting_down;
}

}  // namespace nearcache::daemon
