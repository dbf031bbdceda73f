// URL parsing (rediss:// included), config validation and the value
// msgpack integer codec (the value envelope: test_value.cc).
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <set>

#include "redis/config.h"
#include "redis/url.h"
#include "redis/value.h"

using namespace nearcache::redis;

TEST_CASE("redis:// URLs", "[redis][url]") {
  Endpoint e;
  std::string err;
  REQUIRE(parse_url("redis://localhost", &e, &err));
  CHECK_FALSE(e.unix_socket);
  CHECK(e.host == "localhost");
  CHECK(e.port == 6379);
  CHECK(e.db == 0);
  CHECK_FALSE(e.has_password);

  REQUIRE(parse_url("redis://10.0.0.5:6380/3", &e, &err));
  CHECK(e.host == "10.0.0.5");
  CHECK(e.port == 6380);
  CHECK(e.db == 3);

  REQUIRE(parse_url("REDIS://:s%40cret@cache.example:7000/1", &e, &err));
  CHECK(e.user.empty());
  CHECK(e.password == "s@cret");
  CHECK(e.has_password);
  CHECK(e.host == "cache.example");
  CHECK(e.masked() == "redis://:***@cache.example:7000/1");

  REQUIRE(parse_url("redis://alice:p%3Aw@[::1]:6390", &e, &err));
  CHECK(e.user == "alice");
  CHECK(e.password == "p:w");
  CHECK(e.host == "::1");
  CHECK(e.port == 6390);
  CHECK(e.masked() == "redis://alice:***@[::1]:6390");
  CHECK(e.masked().find("p:w") == std::string::npos);

  REQUIRE(parse_url("redis://h/", &e, &err));
  CHECK(e.db == 0);
}

TEST_CASE("unix:// URLs", "[redis][url]") {
  Endpoint e;
  std::string err;
  REQUIRE(parse_url("unix:///run/redis/redis.sock", &e, &err));
  CHECK(e.unix_socket);
  CHECK(e.path == "/run/redis/redis.sock");
  CHECK(e.db == 0);
  REQUIRE(parse_url("unix://bob:pw@/var/run/r.sock?db=2", &e, &err));
  CHECK(e.user == "bob");
  CHECK(e.password == "pw");
  CHECK(e.path == "/var/run/r.sock");
  CHECK(e.db == 2);
  CHECK(e.masked() == "unix://bob:***@/var/run/r.sock?db=2");
}

TEST_CASE("bad URLs are refused with a message naming the problem", "[redis][url]") {
  Endpoint e;
  std::string err;
  REQUIRE(parse_url("rediss://u:pw@cache:6380/3", &e, &err));
  CHECK(e.tls);
  CHECK(e.host == "cache");
  CHECK(e.port == 6380);
  CHECK(e.db == 3);
  CHECK(e.masked() == "rediss://u:***@cache:6380/3");
  e = Endpoint{};
  struct Case {
    const char* url;
    const char* says;
  } cases[] = {
      {"http://x", "must start with redis://, rediss:// or unix://"},
      {"redis://", "no host"},
      {"redis://h:0", "port must be 1-65535"},
      {"redis://h:70000", "port must be 1-65535"},
      {"redis://h:", "empty port"},
      {"redis://h/x", "database must be a number"},
      {"redis://secret@h", "user:password@"},
      {"redis://h?timeout=1", "no query parameters"},
      {"redis://[::1", "unterminated"},
      {"redis://:%zz@h", "percent-escape"},
      {"unix://", "absolute socket path"},
      {"unix://host/path", "takes no host"},
      {"unix:///p?timeout=3", "db=N"},
  };
  for (const auto& c : cases) {
    INFO(c.url);
    err.clear();
    CHECK_FALSE(parse_url(c.url, &e, &err));
    CHECK(err.find(c.says) != std::string::npos);
  }
}

TEST_CASE("config validation and the option rows", "[redis][url]") {
  Config c;
  Endpoint e;
  std::string err;
  c.url = "redis://127.0.0.1";
  CHECK(validate(c, &e, &err));
  c.prefix = "";
  CHECK_FALSE(validate(c, &e, &err));
  CHECK(err.find("redis_prefix") != std::string::npos);
  c.prefix = std::string("a\0b", 3);
  CHECK_FALSE(validate(c, &e, &err));
  c.prefix = "p:";
  c.reconnect_max_ms = 1;
  c.reconnect_min_ms = 100;
  CHECK_FALSE(validate(c, &e, &err));
  CHECK(err.find("redis_reconnect_max_ms") != std::string::npos);

  DownPolicy p;
  CHECK(parse_down_policy("error", &p, &err));
  CHECK(p == DownPolicy::error);
  CHECK_FALSE(parse_down_policy("maybe", &p, &err));

  // Every row has a help text; names are unique and start with redis_.
  std::set<std::string> names;
  for (const auto& r : redis_options()) {
    CHECK(std::string(r.name).rfind("redis_", 0) == 0);
    CHECK(std::string(r.help).size() > 20);
    CHECK(names.insert(r.name).second);
  }
  CHECK(names.count("redis_down"));
}

TEST_CASE("redis_password_file: a private file, its first line, and URLs without a password", "[redis][url]") {
  char dir[] = "/tmp/nearcache-pwtest-XXXXXX";
  REQUIRE(mkdtemp(dir));
  const std::string path = std::string(dir) + "/pw";
  auto write = [&](const std::string& text, mode_t mode) {
    FILE* f = fopen(path.c_str(), "w");
    REQUIRE(f);
    fputs(text.c_str(), f);
    fclose(f);
    REQUIRE(chmod(path.c_str(), mode) == 0);
  };
  std::string pw, err;
  write("s3cret\nignored\n", 0600);
  REQUIRE(read_password_file(path, &pw, &err));
  CHECK(pw == "s3cret");
  write("crlf\r\n", 0400);
  REQUIRE(read_password_file(path, &pw, &err));
  CHECK(pw == "crlf");
  write("s3cret\n", 0640);  // the app users' group could read it
  CHECK_FALSE(read_password_file(path, &pw, &err));
  CHECK(err.find("0640") != std::string::npos);
  CHECK(err.find("chmod 600") != std::string::npos);
  CHECK(err.find("s3cret") == std::string::npos);
  write("x", 0604);
  CHECK_FALSE(read_password_file(path, &pw, &err));
  write("\n", 0600);
  CHECK_FALSE(read_password_file(path, &pw, &err));
  CHECK(err.find("empty") != std::string::npos);
  CHECK_FALSE(read_password_file(std::string(dir) + "/absent", &pw, &err));
  CHECK(err.find("No such file") != std::string::npos);
  CHECK_FALSE(read_password_file(dir, &pw, &err));  // a directory
  unlink(path.c_str());
  rmdir(dir);

  Config c;
  Endpoint e;
  c.url = "redis://alice@h";
  CHECK_FALSE(validate(c, &e, &err));  // user@ without a password file: ambiguous
  c.password_file = "/etc/nearcache/redis.password";
  c.password = "from-file";
  REQUIRE(validate(c, &e, &err));
  CHECK(e.user == "alice");
  CHECK(e.password == "from-file");
  CHECK(e.has_password);
  CHECK(e.masked() == "redis://alice:***@h:6379");
  c.url = "unix:///run/redis.sock";
  REQUIRE(validate(c, &e, &err));
  CHECK(e.password == "from-file");
  CHECK(e.user.empty());
  c.url = "redis://:inline@h";
  CHECK_FALSE(validate(c, &e, &err));
  CHECK(err.find("remove the password") != std::string::npos);
  CHECK(err.find("inline") == std::string::npos);
}

TEST_CASE("msgpack integer codec matches the table's", "[redis][url]") {
  __int128 x;
  for (int64_t v : {int64_t(0), int64_t(127), int64_t(128), int64_t(-32), int64_t(-33), int64_t(255), int64_t(256),
                    int64_t(65535), int64_t(65536), int64_t(-129), int64_t(-32769), int64_t(4294967295),
                    int64_t(4294967296), INT64_MAX, INT64_MIN, int64_t(INT32_MIN), int64_t(INT32_MIN) - 1}) {
    const std::string e = encode_msgpack_int(v);
    REQUIRE(parse_msgpack_int(e, &x));
    CHECK(int64_t(x) == v);
  }
  CHECK(encode_msgpack_int(5) == "\x05");
  CHECK(encode_msgpack_int(200) == "\xcc\xc8");
  CHECK(encode_msgpack_int(-1) == "\xff");
  CHECK_FALSE(parse_msgpack_int("\xa1x", &x));
  CHECK_FALSE(parse_msgpack_int(std::string("\x05\x05"), &x));
}

TEST_CASE("redis_sentinels lists and the Sentinel form of redis_url", "[redis][url][sentinel]") {
  std::vector<HostPort> s;
  std::string err;
  REQUIRE(parse_sentinels("10.0.0.1:26380, sentinel-b ,[::1]:5000", &s, &err));
  REQUIRE(s.size() == 3);
  CHECK((s[0].host == "10.0.0.1" && s[0].port == 26380));
  CHECK((s[1].host == "sentinel-b" && s[1].port == 26379));  // the default Sentinel port
  CHECK((s[2].host == "::1" && s[2].port == 5000));
  CHECK(s[2].where() == "[::1]:5000");
  for (const char* bad : {"", "a:1,", ",a:1", "a:0", "a:70000", "a:", "[::1", "a:1,a:1", "a b:1"}) {
    INFO(bad);
    CHECK_FALSE(parse_sentinels(bad, &s, &err));
    CHECK(err.rfind("redis_sentinels", 0) == 0);
  }
  CHECK((parse_sentinels("a:1,a:1", &s, &err), err.find("listed twice") != std::string::npos));

  Endpoint e;
  REQUIRE(parse_sentinel_url("", &e, &err));
  CHECK((e.host.empty() && !e.tls && e.db == 0 && !e.has_password));
  CHECK(e.masked() == "redis:///");
  REQUIRE(parse_sentinel_url("rediss://app@/2", &e, &err, true));
  CHECK((e.tls && e.user == "app" && e.db == 2 && e.host.empty()));
  CHECK(e.masked() == "rediss://app:***@/2");
  REQUIRE(parse_sentinel_url("redis://:pw@", &e, &err));
  CHECK((e.password == "pw" && e.has_password && e.db == 0));
  CHECK_FALSE(parse_sentinel_url("redis://h:6379/0", &e, &err));
  CHECK(err.find("names a host while redis_sentinels is set") != std::string::npos);
  CHECK_FALSE(parse_sentinel_url("unix:///run/redis.sock", &e, &err));
  CHECK_FALSE(parse_url("redis:///2", &e, &err));  // without Sentinel a host is needed
}

TEST_CASE("config validation of the Sentinel options", "[redis][url][sentinel]") {
  Config c;
  Endpoint e;
  std::vector<HostPort> s;
  std::string err;
  CHECK_FALSE(c.enabled());
  c.sentinels = "127.0.0.1:26379,127.0.0.1:26380";
  CHECK(c.enabled());  // no redis_url needed
  CHECK_FALSE(validate(c, &e, &s, &err));
  CHECK(err.find("without redis_sentinel_master") != std::string::npos);
  c.sentinel_master = "mymaster";
  REQUIRE(validate(c, &e, &s, &err));
  CHECK(s.size() == 2);
  CHECK(e.host.empty());
  c.url = "redis://cache:6379";
  CHECK_FALSE(validate(c, &e, &s, &err));
  c.url = "redis://alice@/3";
  CHECK_FALSE(validate(c, &e, &s, &err));  // user@ needs redis_password_file
  c.password_file = "/x";
  c.password = "data-pw";
  REQUIRE(validate(c, &e, &s, &err));
  CHECK((e.user == "alice" && e.password == "data-pw" && e.db == 3));
  c.url = "redis://";
  c.tls_verify = false;
  CHECK_FALSE(validate(c, &e, &s, &err));  // redis_tls_* without rediss://
  c.url = "rediss://";
  REQUIRE(validate(c, &e, &s, &err));
  CHECK(e.tls);
  c.sentinel_master = "my master";
  CHECK_FALSE(validate(c, &e, &s, &err));
  c.sentinel_master = "mymaster";
  c.sentinel_timeout_ms = c.connect_timeout_ms + 1;
  CHECK_FALSE(validate(c, &e, &s, &err));
  CHECK(err.find("redis_sentinel_timeout_ms") != std::string::npos);

  Config d;
  d.sentinel_master = "mymaster";  // a name without Sentinels is an error, not ignored
  CHECK(d.enabled());
  CHECK_FALSE(validate(d, &e, &s, &err));
  CHECK(err.find("without redis_sentinels") != std::string::npos);
  Config f;
  f.url = "redis://h";
  f.sentinel_password_file = "/x";
  CHECK_FALSE(validate(f, &e, &s, &err));
  Config g;
  g.url = "redis://h:6380/1";  // no Sentinel: unchanged
  REQUIRE(validate(g, &e, &s, &err));
  CHECK((s.empty() && e.host == "h" && e.port == 6380));
}
