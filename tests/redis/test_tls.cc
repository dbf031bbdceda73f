// tests/redis/test_tls.cc — the Redis link over TLS against a real
// redis-server that listens with TLS only (its plaintext Unix socket serves
// the checks), with certificates the test makes with the `openssl` command:
// a CA, server certificates with the right names, a wrong name and an
// expired one, a client certificate (mutual TLS) and a second CA.
#include <sys/stat.h>

#include <cstdlib>
#include <fstream>

#include "fixture.h"
#include "redis/replies.h"
#include "redis/tls.h"

using namespace nctest;
using namespace nearcache::redis;

namespace {

// Certificates in a temporary directory, made once per test binary run.
struct Pki {
  std::string dir;

  Pki() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "nc-pki-XXXXXX").string();
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    dir = tmpl;
    ca("ca");
    ca("ca2");
    leaf("server", "ca", "subjectAltName=DNS:localhost,IP:127.0.0.1", "30");
    leaf("wrongname", "ca", "subjectAltName=DNS:other.example,IP:10.9.9.9", "30");
    leaf("expired", "ca", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-1");  // notAfter before now
    leaf("server2", "ca2", "subjectAltName=DNS:localhost,IP:127.0.0.1", "30");
    leaf("client", "ca", "extendedKeyUsage=clientAuth", "30");
  }
  ~Pki() {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  std::string f(const std::string& name) const { return dir + "/" + name; }

 private:
  void run(const std::string& cmd) {
    INFO(cmd);
    REQUIRE(std::system((cmd + " >/dev/null 2>&1").c_str()) == 0);
  }
  static constexpr const char* kKey = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
  void ca(const std::string& n) {
    run("openssl req -x509 " + std::string(kKey) + " -keyout " + f(n + ".key") + " -out " + f(n + ".crt") +
        " -days 30 -subj /CN=nearcache-test-" + n);
  }
  void leaf(const std::string& n, const std::string& ca, const std::string& ext, const std::string& days) {
    {
      std::ofstream e(f(n + ".ext"));
      e << ext << "\n";
    }
    run("openssl req " + std::string(kKey) + " -keyout " + f(n + ".key") + " -out " + f(n + ".csr") + " -subj /CN=" +
        n);
    run("openssl x509 -req -in " + f(n + ".csr") + " -CA " + f(ca + ".crt") + " -CAkey " + f(ca + ".key") +
        " -CAcreateserial -out " + f(n + ".crt") + " -days " + days + " -extfile " + f(n + ".ext"));
    chmod(f(n + ".key").c_str(), 0600);
  }
};

Pki& pki() {
  static Pki p;
  return p;
}

// A redis-server with TLS only on TCP (plaintext on its Unix socket only),
// presenting `cert`, with an ACL user so that AUTH shows whether anything
// was sent.
RedisServer::Options tls_server(int port, const std::string& cert, const char* auth_clients = "no") {
  RedisServer::Options o;
  o.user = "app";
  o.user_password = "pw";
  o.extra_args = {"--tls-port", std::to_string(port), "--tls-cert-file", pki().f(cert + ".crt"), "--tls-key-file",
                  pki().f(cert + ".key"), "--tls-ca-cert-file", pki().f("ca.crt"), "--tls-auth-clients", auth_clients};
  return o;
}

// What each test of a link starts from: a TLS redis-server on a free port
// presenting `cert` (tls_server), and a loop.
struct TlsRedis {
  const int port = free_port();
  RedisServer redis;
  Loop loop;
  explicit TlsRedis(const std::string& cert, const char* auth_clients = "no")
      : redis(tls_server(port, cert, auth_clients)) {}
};

std::shared_ptr<const TlsClient> client(TlsOptions o) {
  std::string err;
  auto c = TlsClient::create(o, &err);
  INFO(err);
  REQUIRE(c);
  return c;
}

LinkOptions opts(std::shared_ptr<const TlsClient> tls) {
  LinkOptions o;
  o.connect_timeout_ms = 2000;
  o.reconnect_min_ms = 20;
  o.reconnect_max_ms = 50;
  o.tls = std::move(tls);
  return o;
}

std::string url(const std::string& host, int port) { return "rediss://app:pw@" + host + ":" + std::to_string(port); }

void close_link(Loop& loop, Link& l) {
  bool closed = false;
  l.close([&] { closed = true; });
  REQUIRE(loop.until([&] { return closed; }));
}

std::string get(Loop& loop, Link& l, const std::string& key) {
  std::string out = "(none)";
  REQUIRE(l.command({"GET", key}, [&](const nearcache::redis::Reply& r) {
    out = r.is_error() ? "error: " + r.error() : r.r->type == REDIS_REPLY_NIL ? "(nil)" : std::string(r.r->str, r.r->len);
  }));
  REQUIRE(loop.until([&] { return out != "(none)"; }));
  return out;
}

// Starts the link and waits until it is ready: handshake verified, AUTH done.
void connect(Loop& loop, Link& l) {
  l.start();
  REQUIRE(loop.until([&] { return l.ready(); }));
}

// The link keeps failing; its reason says `says`; AUTH never reached Redis.
void refused(Loop& loop, RedisServer& redis, Link& l, const std::string& says) {
  l.start();
  REQUIRE(loop.until([&] { return l.status().failures_total >= 2; }));
  const LinkStatus st = l.status();
  INFO(st.last_error);
  CHECK_FALSE(l.ready());
  CHECK(st.last_error.find(says) != std::string::npos);
  CHECK(st.tls_verify_error.find(says) != std::string::npos);
  CHECK(st.tls_verify_failures_total >= 2);
  CHECK(redis.calls("auth") == 0);  // nothing was sent on the refused connections
  close_link(loop, l);
}

}  // namespace

TEST_CASE("rediss:// with a host name and with an IP address: verified, commands in order", "[redis][tls]") {
  TlsRedis t("server");
  t.redis.cmd("SET k v");
  for (const char* host : {"localhost", "127.0.0.1"}) {
    INFO(host);
    Link l(t.loop, endpoint(url(host, t.port)), opts(client({.ca_file = pki().f("ca.crt")})));
    connect(t.loop, l);
    CHECK(get(t.loop, l, "k") == "v");
    // Many pipelined commands, with a value larger than one TLS record.
    const std::string big(100000, 'x');
    int answered = 0;
    for (int i = 0; i < 200; ++i)
      REQUIRE(l.command({"SET", "k" + std::to_string(i), i == 7 ? big : std::to_string(i)}, [&](const nearcache::redis::Reply& r) {
        CHECK_FALSE(r.is_error());
        answered++;
      }));
    REQUIRE(t.loop.until([&] { return answered == 200; }));
    CHECK(get(t.loop, l, "k7") == big);
    CHECK(get(t.loop, l, "k199") == "199");
    const LinkStatus st = l.status();
    CHECK(st.tls);
    CHECK(st.tls_verify);
    CHECK(st.tls_verify_error.empty());
    close_link(t.loop, l);
  }
}

TEST_CASE("mutual TLS: without a client certificate Redis refuses, with one the link works", "[redis][tls]") {
  TlsRedis t("server", "yes");
  {
    Link l(t.loop, endpoint(url("localhost", t.port)), opts(client({.ca_file = pki().f("ca.crt")})));
    l.start();
    REQUIRE(t.loop.until([&] { return l.status().failures_total >= 2; }));
    INFO(l.status().last_error);
    CHECK_FALSE(l.ready());
    CHECK(t.redis.calls("auth") == 0);
    close_link(t.loop, l);
  }
  Link l(t.loop, endpoint(url("localhost", t.port)),
         opts(client({.ca_file = pki().f("ca.crt"), .cert_file = pki().f("client.crt"),
                      .key_file = pki().f("client.key")})));
  connect(t.loop, l);
  CHECK(get(t.loop, l, "nothing") == "(nil)");
  close_link(t.loop, l);
}

TEST_CASE("a client key file others may read is refused like the password file", "[redis][tls]") {
  const std::string key = pki().dir + "/open.key";
  std::filesystem::copy_file(pki().f("client.key"), key, std::filesystem::copy_options::overwrite_existing);
  chmod(key.c_str(), 0644);
  std::string err;
  CHECK_FALSE(TlsClient::create({.cert_file = pki().f("client.crt"), .key_file = key}, &err));
  CHECK(err.find("redis_tls_key_file") != std::string::npos);
  CHECK(err.find("chmod 600") != std::string::npos);
  CHECK_FALSE(TlsClient::create({.cert_file = pki().f("client.crt"), .key_file = pki().f("server.key")}, &err));
  INFO(err);
  CHECK(err.find("does not match") != std::string::npos);
  CHECK_FALSE(TlsClient::create({.ca_file = pki().dir + "/missing.crt"}, &err));
  CHECK(err.find("redis_tls_ca_file") != std::string::npos);
}

TEST_CASE("a certificate from another CA is refused: unknown CA, nothing sent", "[redis][tls]") {
  TlsRedis t("server2");
  Link l(t.loop, endpoint(url("localhost", t.port)), opts(client({.ca_file = pki().f("ca.crt")})));
  refused(t.loop, t.redis, l, "unknown CA");
  CHECK(l.status().last_error.find("unable to get local issuer certificate") != std::string::npos);
}

TEST_CASE("the system's CA store does not trust a private CA", "[redis][tls]") {
  TlsRedis t("server");
  Link l(t.loop, endpoint(url("localhost", t.port)), opts(nullptr));  // rediss:// defaults: system store, verify
  refused(t.loop, t.redis, l, "unknown CA");
}

TEST_CASE("a certificate for another name is refused (name mismatch), redis_tls_server_name fixes it", "[redis][tls]") {
  TlsRedis t("wrongname");
  {
    Link l(t.loop, endpoint(url("localhost", t.port)), opts(client({.ca_file = pki().f("ca.crt")})));
    refused(t.loop, t.redis, l, "name mismatch");
  }
  {
    Link l(t.loop, endpoint(url("127.0.0.1", t.port)), opts(client({.ca_file = pki().f("ca.crt")})));
    refused(t.loop, t.redis, l, "name mismatch");
    CHECK(l.status().last_error.find("IP address mismatch") != std::string::npos);
  }
  Link l(t.loop, endpoint(url("127.0.0.1", t.port)),
         opts(client({.ca_file = pki().f("ca.crt"), .server_name = "other.example"})));
  connect(t.loop, l);
  close_link(t.loop, l);
}

TEST_CASE("an expired certificate is refused: expired", "[redis][tls]") {
  TlsRedis t("expired");
  Link l(t.loop, endpoint(url("localhost", t.port)), opts(client({.ca_file = pki().f("ca.crt")})));
  refused(t.loop, t.redis, l, "expired");
}

TEST_CASE("verify off connects to a server no CA vouches for, and says so", "[redis][tls]") {
  TlsRedis t("server2");
  Link l(t.loop, endpoint(url("localhost", t.port)), opts(client({.verify = false})));
  connect(t.loop, l);
  CHECK(get(t.loop, l, "x") == "(nil)");
  CHECK(l.status().tls);
  CHECK_FALSE(l.status().tls_verify);
  close_link(t.loop, l);
}

TEST_CASE("new certificates (SIGHUP) are used from the next connection", "[redis][tls]") {
  TlsRedis t("server");
  Link l(t.loop, endpoint(url("localhost", t.port)), opts(client({.ca_file = pki().f("ca2.crt")})));
  l.start();
  REQUIRE(t.loop.until([&] { return l.status().tls_verify_failures_total >= 1; }));
  CHECK_FALSE(l.ready());
  l.set_tls(client({.ca_file = pki().f("ca.crt")}));
  REQUIRE(t.loop.until([&] { return l.ready(); }));
  close_link(t.loop, l);
}

TEST_CASE("a reply above max_reply_bytes closes the connection before it is buffered", "[redis][tls]") {
  TlsRedis t("server");
  t.redis.cmd("SET small abc");
  t.redis.cmdv({"SET", "big", std::string(1 << 20, 'b')});
  LinkOptions o = opts(client({.ca_file = pki().f("ca.crt")}));
  o.max_reply_bytes = 4096;
  Link l(t.loop, endpoint(url("localhost", t.port)), o);
  connect(t.loop, l);
  CHECK(get(t.loop, l, "small") == "abc");
  std::string why;
  REQUIRE(l.command({"GET", "big"}, [&](const nearcache::redis::Reply& r) { why = r.is_error() ? r.error() : "ok"; }));
  REQUIRE(t.loop.until([&] { return !why.empty(); }));
  CHECK(why.find("max_reply_bytes") != std::string::npos);
  REQUIRE(t.loop.until([&] { return l.ready(); }));  // reconnected
  close_link(t.loop, l);
}

TEST_CASE("two hosts over TLS: write-behind, read-through and invalidations", "[redis][tls][tier]") {
  TlsRedis t("server", "yes");
  Config cfg = test_config(url("localhost", t.port));
  cfg.tls_ca_file = pki().f("ca.crt");
  cfg.tls_cert_file = pki().f("client.crt");
  cfg.tls_key_file = pki().f("client.key");
  Host a(t.loop, cfg), b(t.loop, cfg);
  a.start();
  b.start();
  // Write-behind from a reaches Redis.
  a.set("k", "v1");
  REQUIRE(t.loop.until([&] { return t.redis.cmd("EXISTS nc:k").integer() == 1; }));
  // b reads it through.
  Fetched now, got;
  bool done = false;
  const Lookup lk = b.tier->get("k", &now, [&](const Fetched& f) {
    got = f;
    done = true;
  });
  if (lk == Lookup::pending) REQUIRE(t.loop.until([&] { return done; }));
  else got = now;
  CHECK(got.kind == Fetched::Kind::hit);
  CHECK(got.value == "v1");
  // a's write invalidates b's own copy of a key.
  b.set("j", "mine");
  REQUIRE(t.loop.until([&] { return t.redis.cmd("EXISTS nc:j").integer() == 1; }));
  a.set("j", "theirs");
  REQUIRE(t.loop.until([&] { return b.table.count("j") == 0; }));
  REQUIRE(t.loop.until([&] { return t.redis.cmd("GET nc:j").str().find("theirs") != std::string::npos; }));
  const TierStatus st = a.tier->status();
  CHECK(st.data.tls);
  CHECK(st.data.tls_verify);
  CHECK(st.invalidation.tls);
  CHECK(st.url.rfind("rediss://", 0) == 0);
}

TEST_CASE("the reply parser refuses oversized headers before hiredis allocates for them", "[redis][replies]") {
  std::string err;
  {
    ReplyParser p;  // no byte bound: arrays are still capped
    CHECK_FALSE(p.feed("*555555555\r\n", 12, &err));
    CHECK(err.find("elements") != std::string::npos);
  }
  {
    ReplyParser p(100);
    // A bulk string announced over the bound is refused at its header; its
    // payload (which may look like headers) is skipped, not scanned.
    const std::string ok = "$10\r\n*999999999\r\n+OK\r\n";
    REQUIRE(p.feed(ok.data(), ok.size(), &err));
    redisReply* r = nullptr;
    REQUIRE(p.next(&r, &err));
    REQUIRE(r);
    CHECK(std::string(r->str, r->len) == "*999999999");
    freeReplyObject(r);
    CHECK_FALSE(p.feed("$101\r\n", 6, &err));
    CHECK(err.find("max_reply_bytes") != std::string::npos);
  }
}

TEST_CASE("a TLS handshake that never completes is bounded by connect_timeout_ms while the loop keeps turning",
          "[redis][tls]") {
  TlsRedis t("server");
  t.redis.pause();  // the kernel still accepts the TCP connection; nobody answers the ClientHello
  LinkOptions o = opts(client({.ca_file = pki().f("ca.crt")}));
  o.connect_timeout_ms = 150;
  Link l(t.loop, endpoint(url("localhost", t.port)), o);
  uint64_t ticks = 0;
  uv_timer_t tick;
  uv_timer_init(t.loop, &tick);
  tick.data = &ticks;
  uv_timer_start(&tick, [](uv_timer_t* t) { ++*static_cast<uint64_t*>(t->data); }, 10, 10);
  const uint64_t t0 = now_ms();
  l.start();
  REQUIRE(t.loop.until([&] { return l.status().failures_total >= 1; }, 3000));
  const uint64_t took = now_ms() - t0;
  INFO(l.status().last_error);
  CHECK(l.status().last_error.find("(TLS): timed out after 150 ms") != std::string::npos);
  CHECK(took < 1000);
  CHECK(ticks >= 5);  // the loop ran its timers meanwhile
  t.redis.resume();
  REQUIRE(t.loop.until([&] { return l.ready(); }, 5000));
  uv_close(reinterpret_cast<uv_handle_t*>(&tick), nullptr);
  close_link(t.loop, l);
}
