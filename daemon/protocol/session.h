// daemon/protocol/session.h — one client connection's protocol state, independent of
// the transport: input bytes and the frame scanner, negotiated version,
// credentials, counters, and replies not yet handed to the socket.
//
// The server owns a Session per connection and moves bytes in and out; the
// Engine consumes `in` and appends replies to `out`. Tests and the fuzzer
// drive a Session without any socket.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <cstdlib>
#include <limits>
#include <cstring>
#include <string>

#include "protocol/frame.h"

namespace nearcache::daemon {

// A growable byte buffer: bytes [start, len) are unconsumed input.
class ByteBuffer {
 public:
  ByteBuffer() = default;
  ~ByteBuffer() { std::free(data_); }
  ByteBuffer(const ByteBuffer&) = delete;
  ByteBuffer& operator=(const ByteBuffer&) = delete;

  unsigned char* data() { return data_ + start_; }
  size_t size() const { return len_ - start_; }
  // Room for at least `n` more bytes at the end; returns where to write them.
  unsigned char* reserve(size_t n) {
    if (start_ > 0 && (start_ == len_ || start_ >= cap_ / 2)) {
      std::memmove(data_, data_ + start_, len_ - start_);
      len_ -= start_;
      start_ = 0;
    }
    if (cap_ - len_ < n) {
      size_t cap = cap_ ? cap_ : 4096;
      while (cap - len_ < n) cap *= 2;
      auto* p = static_cast<unsigned char*>(std::realloc(data_, cap));
      if (!p) std::abort();
      data_ = p;
      cap_ = cap;
    }
    return data_ + len_;
  }
  size_t room() const { return cap_ - len_; }
  void commit(size_t n) { len_ += n; }
  void consume(size_t n) {
    start_ += n;
    if (start_ == len_) start_ = len_ = 0;
  }
  // Gives memory back after a large frame.
  void shrink(size_t keep) {
    if (size() == 0 && cap_ > keep) {
      std::free(data_);
      data_ = nullptr;
      cap_ = len_ = start_ = 0;
    }
  }
  void append(const void* p, size_t n) {
    std::memcpy(reserve(n), p, n);
    commit(n);
  }

 private:
  unsigned char* data_ = nullptr;
  size_t cap_ = 0, len_ = 0, start_ = 0;
};

// Where replies go: msgpack::packer writes through write().
struct OutBuffer {
  std::string bytes;
  void write(const char* p, size_t n) { bytes.append(p, n); }
};

// Bounds on one Engine::feed() call, set by the transport before each call
// so that one connection never holds the loop for long and never produces
// more replies than it may leave unread. feed() checks them before each
// frame, so a call overshoots `out_bytes` by at most one reply. Unbounded by
// default (tests, the fuzzer).
struct FeedBudget {
  size_t frames = std::numeric_limits<size_t>::max();     // frames executed
  size_t in_bytes = std::numeric_limits<size_t>::max();   // request bytes consumed
  size_t out_bytes = std::numeric_limits<size_t>::max();  // reply bytes produced
};

struct Session {
  uint64_t id = 0;
  uid_t uid = uid_t(-1);
  gid_t gid = gid_t(-1);
  pid_t pid = 0;
  std::string name;  // HELLO's client_name
  int protocol = 2;
  uint64_t requests = 0;     // requests answered
  uint64_t outstanding = 0;  // received, not yet answered (waiting leases, clears)
  // A request decided in Redis (ADD, INCR/DECR, LEASE, TOUCH of a key only
  // Redis has) is running: the connection's later requests wait for it, so
  // they see its effect as they would without Redis. Its wait's id.
  uint64_t blocked = 0;
  ByteBuffer in;
  FrameScanner scanner;
  OutBuffer out;
  bool closing = false;      // a reply that ends the connection was sent: read no more
  bool kill = false;         // drop the connection without flushing (slow reader)
  FeedBudget budget;         // the next feed() call's bounds (the transport sets them)
  bool yielded = false;      // the last feed() stopped at `budget` with input left
  std::string close_reason;  // logged when the connection closes
  void* transport = nullptr; // the server's connection object
};

}  // namespace nearcache::daemon
