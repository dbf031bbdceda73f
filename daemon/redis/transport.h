// daemon/redis/transport.h — a byte stream to Redis on the libuv loop: a TCP
// connection to a resolved address (or a Unix socket), plain or TLS.
//
// TLS runs OpenSSL over memory BIOs, so the loop never blocks and libuv does
// all socket I/O: bytes read from the socket go into the read BIO, SSL_read's
// plaintext goes to the `data` handler; written plaintext goes through
// SSL_write and the write BIO's output into uv_write. OpenSSL's output is
// drained after every read as well (TLS 1.3 sends session tickets and key
// updates after the handshake). `connected` runs only once the handshake and
// certificate checks passed: nothing is written on a connection whose
// verification failed.
//
// Writes are coalesced: what one loop turn writes goes out together just
// before the loop polls again (a uv_prepare handle), and while a uv_write is
// in flight later writes wait and go out together (one SSL_write, one syscall).
//
// Handlers run on the loop thread; after `failed` (once, with the reason) or
// transport_close() no handler runs again. transport_close() may be called
// from inside a handler; the memory is freed once libuv closed the handle.
#pragma once

#include <uv.h>

#include <cstddef>
#include <memory>
#include <string>

namespace nearcache::redis {

class TlsClient;
struct Transport;

struct TransportHandlers {
  void* ctx = nullptr;
  void (*connected)(void* ctx) = nullptr;                          // ready for writes
  void (*data)(void* ctx, const char* bytes, size_t len) = nullptr;  // plaintext from Redis
  void (*failed)(void* ctx, const std::string& why) = nullptr;      // the stream is dead; close it
};

struct TransportTarget {
  std::string ip;    // numeric IPv4 or IPv6 address (TCP) ...
  uint16_t port = 0;
  std::string path;  // ... or a Unix socket path
  // TLS when set; `host` is the URL's host (SNI and the verified name, unless
  // the TlsClient's server_name overrides it).
  std::shared_ptr<const TlsClient> tls;
  std::string host;
};

// Starts connecting; nullptr with *err when it cannot even start (bad
// address, no memory, no SSL). Otherwise exactly one of connected/failed follows.
Transport* transport_open(uv_loop_t* loop, const TransportTarget& target, TransportHandlers h, std::string* err);
// Queues bytes (plaintext); false with *err when the stream is not connected or failed.
bool transport_write(Transport* t, const char* bytes, size_t len, std::string* err);
// Stops (true) or resumes reading from the socket: data waits in the kernel.
void transport_hold(Transport* t, bool hold);
// Ends the stream without running any handler again; frees it (later).
void transport_close(Transport* t);
bool transport_is_tls(const Transport* t);

// The read path without a socket, for the fuzzer: feeds `len` bytes as if
// they came from the socket of a connected (or, with TLS, handshaking)
// transport. Used by tests/fuzz/fuzz_transport.cc only.
void transport_feed_for_test(Transport* t, const char* bytes, size_t len);
// A transport with no socket, in the connected state (plain) or in the TLS
// handshake (tls set): for the fuzzer.
Transport* transport_detached_for_test(const TransportTarget& target, TransportHandlers h, std::string* err);
void transport_free_detached_for_test(Transport* t);

}  // namespace nearcache::redis
