// daemon/redis/tls.h — the Redis link's TLS client side (OpenSSL 3): the
// SSL_CTX built from the redis_tls_* options, one SSL per connection with SNI
// and the name check set, and verification failures as readable reasons.
//
// The transport (transport.h) drives the SSL over memory BIOs; this file
// decides what is trusted. With verification on, the chain (CA file or the
// system's store) and the name are always checked: SSL_set1_host for a DNS
// name, X509_VERIFY_PARAM_set1_ip_asc for an IP address (and no SNI, which
// must not carry an address). A TlsClient is shared by the links that use it;
// reloading (SIGHUP) builds a new one for new connections while connections
// already up keep theirs.
#pragma once

#include <memory>
#include <string>

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;

namespace nearcache::redis {

struct TlsOptions {
  std::string ca_file;      // "" = the system's CA store
  std::string cert_file;    // client certificate (mutual TLS), with key_file
  std::string key_file;     // must be readable by its owner only (read_private_file)
  std::string server_name;  // SNI and the name verified; "" = the URL's host
  bool verify = true;       // false: no chain or name check (logged, shown in STATUS)
};

class TlsClient {
 public:
  // Builds the context; nullptr with *err naming the file or setting at fault.
  static std::shared_ptr<TlsClient> create(const TlsOptions& o, std::string* err);
  ~TlsClient();
  TlsClient(const TlsClient&) = delete;
  TlsClient& operator=(const TlsClient&) = delete;

  // A client SSL for a connection to `host` (the URL's host; server_name
  // overrides it): SNI and the verified name or IP set. nullptr + *err on failure.
  SSL* new_ssl(const std::string& host, std::string* err) const;
  bool verify() const { return o_.verify; }
  const TlsOptions& options() const { return o_; }

 private:
  explicit TlsClient(const TlsOptions& o) : o_(o) {}
  TlsOptions o_;
  SSL_CTX* ctx_ = nullptr;
};

// Why a handshake failed, as text: the verification result when the
// certificate was refused ("certificate verification failed: unknown CA
// (unable to get local issuer certificate)", "... name mismatch ...",
// "... expired ..."), else OpenSSL's error queue (which it empties).
std::string tls_failure_reason(SSL* ssl);
// The queued OpenSSL errors as text (emptied); `fallback` if none.
std::string tls_errors(const char* fallback);

}  // namespace nearcache::redis
