// daemon/redis/transport.cc — see transport.h.
#include "redis/transport.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <climits>
#include <cstring>

#include "redis/tls.h"

namespace nearcache::redis {

namespace {
enum class TState { connecting, handshaking, open, dead, closed };

std::string errno_text(int uv_status) {
  if (uv_status == UV_EOF) return "closed by the server";
  // libuv's statuses are negated errnos here; strerror's text ("Connection
  // refused") is what operators grep for.
  return uv_status < 0 && uv_status > -4096 ? std::strerror(-uv_status) : uv_strerror(uv_status);
}
}  // namespace

struct Transport {
  uv_loop_t* loop = nullptr;
  uv_tcp_t tcp;
  uv_pipe_t pipe;
  uv_stream_t* stream = nullptr;  // &tcp or &pipe; nullptr when detached (fuzzer)
  uv_connect_t connect_req;
  uv_prepare_t cork;     // flushes what this loop turn wrote, before the loop polls again
  int handles = 0;       // open libuv handles (stream, cork): freed when both closed
  TransportHandlers h;
  TState state = TState::connecting;
  std::shared_ptr<const TlsClient> tls;
  SSL* ssl = nullptr;
  BIO *rbio = nullptr, *wbio = nullptr;  // owned by ssl
  bool writing = false, hold = false;
  std::string plain;  // TLS: plaintext waiting for SSL_write (while a write is in flight)
  std::string out;    // bytes for the socket waiting for the write in flight
  char rbuf[65536];
  char pbuf[16384];

  ~Transport() { SSL_free(ssl); }
  bool gone() const { return state == TState::dead || state == TState::closed; }
};

namespace {

struct WriteReq {
  uv_write_t req;
  Transport* t;
  std::string data;
};

void fail(Transport* t, const std::string& why) {
  if (t->gone()) return;
  t->state = TState::dead;
  if (t->stream) uv_read_stop(t->stream);
  if (t->h.failed) t->h.failed(t->h.ctx, why);
}

void drain_wbio(Transport* t) {
  if (!t->wbio) return;
  size_t n;
  while ((n = BIO_ctrl_pending(t->wbio)) > 0) {
    const size_t old = t->out.size();
    t->out.resize(old + n);
    const int got = BIO_read(t->wbio, &t->out[old], int(std::min<size_t>(n, INT_MAX)));
    t->out.resize(old + size_t(got > 0 ? got : 0));
    if (got <= 0) break;
  }
}

void on_write(uv_write_t* req, int status);
void flush(Transport* t);

// Commands written during one loop turn leave together: one syscall (and
// one TLS record set) for GET + PTTL or a burst of write-behind.
void flush_soon(Transport* t) {
  if (!t->stream) return flush(t);
  if (!uv_is_active(reinterpret_cast<uv_handle_t*>(&t->cork)))
    uv_prepare_start(&t->cork, [](uv_prepare_t* p) {
      uv_prepare_stop(p);
      flush(static_cast<Transport*>(p->data));
    });
}

// Encrypts what waits, then hands everything for the socket to one uv_write.
void flush(Transport* t) {
  if (t->writing || t->gone()) return;
  if (t->ssl && !t->plain.empty() && t->state == TState::open) {
    ERR_clear_error();
    const int r = SSL_write(t->ssl, t->plain.data(), int(t->plain.size()));
    if (r <= 0 || size_t(r) != t->plain.size()) return fail(t, "TLS write failed: " + tls_errors("SSL_write"));
    t->plain.clear();
  }
  drain_wbio(t);
  if (t->out.empty()) return;
  if (!t->stream) {  // detached: nowhere to send
    t->out.clear();
    return;
  }
  auto* w = new WriteReq;
  w->t = t;
  w->data.swap(t->out);
  w->req.data = w;
  uv_buf_t b = uv_buf_init(w->data.data(), unsigned(w->data.size()));
  const int rc = uv_write(&w->req, t->stream, &b, 1, on_write);
  if (rc < 0) {
    delete w;
    return fail(t, "write failed: " + errno_text(rc));
  }
  t->writing = true;
}

void on_write(uv_write_t* req, int status) {
  auto* w = static_cast<WriteReq*>(req->data);
  Transport* t = w->t;
  delete w;
  t->writing = false;
  if (t->gone()) return;  // closing: libuv runs this before the close callback
  if (status < 0) return fail(t, "write failed: " + errno_text(status));
  flush(t);
}

// Bytes from the socket (or the fuzzer).
void on_bytes(Transport* t, const char* p, size_t n) {
  if (t->gone()) return;
  if (!t->ssl) {
    if (t->h.data) t->h.data(t->h.ctx, p, n);
    return;
  }
  if (n > 0 && BIO_write(t->rbio, p, int(n)) != int(n)) return fail(t, "TLS: cannot buffer input");
  if (t->state == TState::handshaking) {
    ERR_clear_error();
    const int r = SSL_do_handshake(t->ssl);
    if (r != 1) {
      const int e = SSL_get_error(t->ssl, r);
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        drain_wbio(t);
        flush(t);
        return;
      }
      const std::string why = tls_failure_reason(t->ssl);
      drain_wbio(t);  // the alert, if any; no application data was ever written
      flush(t);
      return fail(t, why);
    }
    t->state = TState::open;
    drain_wbio(t);
    flush(t);
    if (t->h.connected) t->h.connected(t->h.ctx);
    if (t->gone()) return;
  }
  for (;;) {
    ERR_clear_error();
    const int r = SSL_read(t->ssl, t->pbuf, sizeof t->pbuf);
    if (r > 0) {
      if (t->h.data) t->h.data(t->h.ctx, t->pbuf, size_t(r));
      if (t->gone()) return;
      continue;
    }
    const int e = SSL_get_error(t->ssl, r);
    if (e == SSL_ERROR_WANT_READ) break;
    if (e == SSL_ERROR_ZERO_RETURN) return fail(t, "the server closed the TLS session");
    return fail(t, "TLS error: " + tls_errors("SSL_read failed"));
  }
  // Session tickets, key update answers: whatever OpenSSL wants to send.
  drain_wbio(t);
  flush(t);
}

void on_alloc(uv_handle_t* h, size_t, uv_buf_t* buf) {
  auto* t = static_cast<Transport*>(h->data);
  *buf = uv_buf_init(t->rbuf, sizeof t->rbuf);
}

void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t*) {
  auto* t = static_cast<Transport*>(s->data);
  if (t->gone()) return;
  if (nread < 0) return fail(t, errno_text(int(nread)));
  if (nread > 0) on_bytes(t, t->rbuf, size_t(nread));
}

void start_tls(Transport* t) {
  t->state = TState::handshaking;
  ERR_clear_error();
  const int r = SSL_do_handshake(t->ssl);  // writes the ClientHello into the write BIO
  const int e = SSL_get_error(t->ssl, r);
  if (r != 1 && e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
    return fail(t, "TLS handshake failed: " + tls_errors("cannot start"));
  drain_wbio(t);
  flush(t);
}

void on_connect(uv_connect_t* req, int status) {
  auto* t = static_cast<Transport*>(req->data);
  if (t->gone()) return;
  if (status < 0) return fail(t, errno_text(status));
  if (!t->hold) uv_read_start(t->stream, on_alloc, on_read);
  if (t->ssl) return start_tls(t);
  t->state = TState::open;
  if (t->h.connected) t->h.connected(t->h.ctx);
}

bool setup_tls(Transport* t, const TransportTarget& target, std::string* err) {
  if (!target.tls) return true;
  t->tls = target.tls;
  t->ssl = target.tls->new_ssl(target.host, err);
  if (!t->ssl) return false;
  t->rbio = BIO_new(BIO_s_mem());
  t->wbio = BIO_new(BIO_s_mem());
  if (!t->rbio || !t->wbio) {
    BIO_free(t->rbio);
    BIO_free(t->wbio);
    t->rbio = t->wbio = nullptr;
    *err = "TLS: out of memory";
    return false;
  }
  // An empty memory BIO says "retry", not EOF.
  BIO_set_mem_eof_return(t->rbio, -1);
  SSL_set_bio(t->ssl, t->rbio, t->wbio);
  return true;
}

}  // namespace

Transport* transport_open(uv_loop_t* loop, const TransportTarget& target, TransportHandlers h, std::string* err) {
  sockaddr_storage sa{};
  if (target.path.empty()) {
    const int rc = target.ip.find(':') != std::string::npos
                       ? uv_ip6_addr(target.ip.c_str(), target.port, reinterpret_cast<sockaddr_in6*>(&sa))
                       : uv_ip4_addr(target.ip.c_str(), target.port, reinterpret_cast<sockaddr_in*>(&sa));
    if (rc != 0) {
      *err = "bad address " + target.ip;
      return nullptr;
    }
  }
  auto* t = new Transport;
  t->loop = loop;
  t->h = h;
  if (!setup_tls(t, target, err)) {
    delete t;
    return nullptr;
  }
  t->connect_req.data = t;
  uv_prepare_init(loop, &t->cork);
  t->cork.data = t;
  t->handles = 2;
  int rc = 0;
  if (!target.path.empty()) {
    uv_pipe_init(loop, &t->pipe, 0);
    t->stream = reinterpret_cast<uv_stream_t*>(&t->pipe);
    t->stream->data = t;
    uv_pipe_connect(&t->connect_req, &t->pipe, target.path.c_str(), on_connect);
  } else {
    uv_tcp_init(loop, &t->tcp);
    t->stream = reinterpret_cast<uv_stream_t*>(&t->tcp);
    t->stream->data = t;
    uv_tcp_nodelay(&t->tcp, 1);
    rc = uv_tcp_connect(&t->connect_req, &t->tcp, reinterpret_cast<const sockaddr*>(&sa), on_connect);
  }
  if (rc != 0) {
    *err = errno_text(rc);
    transport_close(t);
    return nullptr;
  }
  return t;
}

bool transport_write(Transport* t, const char* bytes, size_t len, std::string* err) {
  if (t->state != TState::open) {
    *err = t->gone() ? "connection lost" : "not connected yet";
    return false;
  }
  (t->ssl ? t->plain : t->out).append(bytes, len);
  flush_soon(t);
  return true;
}

void transport_hold(Transport* t, bool hold) {
  t->hold = hold;
  if (!t->stream || t->gone() || t->state == TState::connecting) return;
  if (hold) uv_read_stop(t->stream);
  else uv_read_start(t->stream, on_alloc, on_read);
}

void transport_close(Transport* t) {
  if (t->state == TState::closed) return;
  t->state = TState::closed;
  if (!t->stream) return;  // detached: transport_free_detached_for_test frees it
  auto closed = [](uv_handle_t* hd) {
    auto* tr = static_cast<Transport*>(hd->data);
    if (--tr->handles == 0) delete tr;
  };
  uv_close(reinterpret_cast<uv_handle_t*>(&t->cork), closed);
  uv_close(reinterpret_cast<uv_handle_t*>(t->stream), closed);
}

bool transport_is_tls(const Transport* t) { return t->ssl != nullptr; }

Transport* transport_detached_for_test(const TransportTarget& target, TransportHandlers h, std::string* err) {
  auto* t = new Transport;
  t->h = h;
  if (!setup_tls(t, target, err)) {
    delete t;
    return nullptr;
  }
  if (t->ssl) start_tls(t);
  else t->state = TState::open;
  return t;
}

void transport_feed_for_test(Transport* t, const char* bytes, size_t len) { on_bytes(t, bytes, len); }

void transport_free_detached_for_test(Transport* t) { delete t; }

}  // namespace nearcache::redis
