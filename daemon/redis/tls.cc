// daemon/redis/tls.cc — see tls.h.
#include "redis/tls.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "redis/config.h"

namespace nearcache::redis {

namespace {

bool is_ip(const std::string& host) {
  unsigned char buf[16];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

// The key is read with the password file's checks (owner-only, regular file),
// then parsed from memory: OpenSSL never opens the path itself.
bool load_key(SSL_CTX* ctx, const std::string& path, std::string* err) {
  std::string pem;
  if (!read_private_file(path, "redis_tls_key_file", 1 << 20, &pem, err)) return false;
  BIO* b = BIO_new_mem_buf(pem.data(), int(pem.size()));
  EVP_PKEY* key = b ? PEM_read_bio_PrivateKey(b, nullptr, nullptr, nullptr) : nullptr;
  BIO_free(b);
  OPENSSL_cleanse(pem.data(), pem.size());
  if (!key) {
    *err = "redis_tls_key_file " + path + ": " + tls_errors("not a PEM private key");
    return false;
  }
  const int ok = SSL_CTX_use_PrivateKey(ctx, key);
  EVP_PKEY_free(key);
  if (ok != 1) {
    *err = "redis_tls_key_file " + path + " does not match redis_tls_cert_file or cannot be used: " +
           tls_errors("cannot use the key");
    return false;
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    *err = "redis_tls_key_file " + path + " does not match redis_tls_cert_file: " + tls_errors("key mismatch");
    return false;
  }
  return true;
}

}  // namespace

std::string tls_errors(const char* fallback) {
  std::string s;
  unsigned long e;
  while ((e = ERR_get_error()) != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!s.empty()) s += "; ";
    s += buf;
  }
  return s.empty() ? fallback : s;
}

std::shared_ptr<TlsClient> TlsClient::create(const TlsOptions& o, std::string* err) {
  std::shared_ptr<TlsClient> c(new TlsClient(o));
  ERR_clear_error();
  c->ctx_ = SSL_CTX_new(TLS_client_method());
  if (!c->ctx_) {
    *err = "TLS: " + tls_errors("cannot create an SSL_CTX");
    return nullptr;
  }
  SSL_CTX_set_min_proto_version(c->ctx_, TLS1_2_VERSION);
  // Writes go into a memory BIO, which takes everything: no partial writes.
  SSL_CTX_set_mode(c->ctx_, SSL_MODE_RELEASE_BUFFERS);
  if (o.verify) {
    const int ok = o.ca_file.empty() ? SSL_CTX_set_default_verify_paths(c->ctx_)
                                     : SSL_CTX_load_verify_locations(c->ctx_, o.ca_file.c_str(), nullptr);
    if (ok != 1) {
      *err = (o.ca_file.empty() ? std::string("TLS: cannot load the system's CA store: ")
                                : "redis_tls_ca_file " + o.ca_file + ": ") +
             tls_errors("no certificates");
      return nullptr;
    }
    SSL_CTX_set_verify(c->ctx_, SSL_VERIFY_PEER, nullptr);
  } else {
    SSL_CTX_set_verify(c->ctx_, SSL_VERIFY_NONE, nullptr);
  }
  if (!o.cert_file.empty()) {
    if (SSL_CTX_use_certificate_chain_file(c->ctx_, o.cert_file.c_str()) != 1) {
      *err = "redis_tls_cert_file " + o.cert_file + ": " + tls_errors("cannot load the certificate");
      return nullptr;
    }
    if (!load_key(c->ctx_, o.key_file, err)) return nullptr;
  }
  return c;
}

TlsClient::~TlsClient() { SSL_CTX_free(ctx_); }

SSL* TlsClient::new_ssl(const std::string& host, std::string* err) const {
  ERR_clear_error();
  SSL* ssl = SSL_new(ctx_);
  if (!ssl) {
    *err = "TLS: " + tls_errors("cannot create an SSL");
    return nullptr;
  }
  const std::string& name = o_.server_name.empty() ? host : o_.server_name;
  const bool ip = is_ip(name);
  bool ok = true;
  // SNI carries host names only (RFC 6066).
  if (!ip && !name.empty()) ok = SSL_set_tlsext_host_name(ssl, name.c_str()) == 1;
  if (ok && o_.verify) {
    if (ip) ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name.c_str()) == 1;
    else ok = SSL_set1_host(ssl, name.c_str()) == 1;
  }
  if (!ok) {
    *err = "TLS: cannot set the server name " + name + ": " + tls_errors("bad name");
    SSL_free(ssl);
    return nullptr;
  }
  SSL_set_connect_state(ssl);
  return ssl;
}

std::string tls_failure_reason(SSL* ssl) {
  const long v = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
  if (v == X509_V_OK) return tls_errors("TLS handshake failed");
  ERR_clear_error();
  const char* what = X509_verify_cert_error_string(v);
  std::string kind;
  switch (v) {
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_CERT_UNTRUSTED:
      kind = "unknown CA";
      break;
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH:
      kind = "name mismatch";
      break;
    case X509_V_ERR_CERT_HAS_EXPIRED:
      kind = "expired";
      break;
    case X509_V_ERR_CERT_NOT_YET_VALID:
      kind = "not yet valid";
      break;
    default:
      break;
  }
  return "certificate verification failed: " + (kind.empty() ? std::string(what) : kind + " (" + what + ")");
}

}  // namespace nearcache::redis
