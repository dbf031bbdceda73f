// tests/daemon_units/test_options.cc — the option table: parsing, files, flags, validation.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "config/options.h"
#include "redis/config.h"

using namespace nearcache::daemon;

namespace {
struct TempFile {
  std::string path;
  explicit TempFile(const std::string& text) {
    char tmpl[] = "/tmp/nearcache-options-XXXXXX";
    const int fd = mkstemp(tmpl);
    REQUIRE(fd >= 0);
    close(fd);
    path = tmpl;
    std::ofstream(path) << text;
  }
  ~TempFile() { std::filesystem::remove(path); }
};
}  // namespace

TEST_CASE("sizes take K, M and G suffixes") {
  uint64_t v;
  CHECK((parse_size("4096", &v) && v == 4096));
  CHECK((parse_size("64M", &v) && v == 64ull << 20));
  CHECK((parse_size("1k", &v) && v == 1024));
  CHECK((parse_size(" 2G ", &v) && v == 2ull << 30));
  CHECK_FALSE(parse_size("", &v));
  CHECK_FALSE(parse_size("M", &v));
  CHECK_FALSE(parse_size("12T", &v));
  CHECK_FALSE(parse_size("-1", &v));
  CHECK_FALSE(parse_size("99999999999999999999", &v));
  CHECK_FALSE(parse_size("17179869184G", &v));  // overflows 64 bits
}

TEST_CASE("defaults") {
  Config c;
  std::string err;
  REQUIRE(load_config({{"socket", "/tmp/x.sock"}}, &c, &err));
  CHECK(c.socket == "/tmp/x.sock");
  CHECK(c.segment == default_runtime_dir(true) + "/nearcached.seg");
  CHECK(c.segment_size == 64ull << 20);
  CHECK(c.socket_mode == 0660);
  CHECK(c.segment_mode == 0640);
  CHECK(c.hints_mode == 0660);
  CHECK(c.key_limit == 1024);
  CHECK(c.value_limit == 1ull << 20);
  CHECK(c.max_frame_bytes == (4ull << 20) + 1024 + (1ull << 20));
  CHECK(c.max_outstanding == 4096);
  CHECK(c.max_output_bytes == 64ull << 20);
  CHECK(c.heartbeat_interval_ms == 100);
  CHECK(c.heartbeat_grace_ms == 2000);
  CHECK(c.log_level == "info");
}

TEST_CASE("the relay bound and the automatic frame limit follow value_limit and the Redis tier") {
  std::string err;
  {  // Without a tier: value_limit bounds everything.
    Config c;
    REQUIRE(load_config({{"socket", "/tmp/x.sock"}, {"value_limit", "64K"}}, &c, &err));
    CHECK(c.redis.relay_max_bytes == 64 << 10);
    CHECK(c.redis.local_max_bytes == 64 << 10);
    CHECK(c.max_frame_bytes == (4ull << 20) + 1024 + (64 << 10));
  }
  {  // With one: values up to redis_relay_max_bytes (16M by default) go to Redis only.
    Config c;
    REQUIRE(load_config({{"socket", "/tmp/x.sock"}, {"redis_url", "redis://127.0.0.1:6379"}}, &c, &err));
    CHECK(c.redis.large_values);
    CHECK(c.redis.relay_max_bytes == 16ull << 20);
    CHECK(c.redis.local_max_bytes == 1ull << 20);
    CHECK(c.max_frame_bytes == (4ull << 20) + 1024 + (16ull << 20));
    CHECK(nearcache::redis::redis_only(c.redis, (1ull << 20) + 1));
    CHECK_FALSE(nearcache::redis::redis_only(c.redis, 1ull << 20));
    CHECK_FALSE(nearcache::redis::redis_only(c.redis, (16ull << 20) + 1));
  }
  {  // A bound below value_limit counts as value_limit; an explicit frame limit stays.
    Config c;
    REQUIRE(load_config({{"socket", "/tmp/x.sock"}, {"redis_url", "redis://127.0.0.1:6379"},
                         {"redis_relay_max_bytes", "4K"}, {"max_frame_bytes", "8M"}},
                        &c, &err));
    CHECK(c.redis.relay_max_bytes == 1ull << 20);
    CHECK(c.max_frame_bytes == 8ull << 20);
  }
  {  // The off switch: as before.
    Config c;
    REQUIRE(load_config({{"socket", "/tmp/x.sock"}, {"redis_url", "redis://127.0.0.1:6379"},
                         {"redis_large_values", "false"}},
                        &c, &err));
    CHECK(c.redis.relay_max_bytes == 1ull << 20);
    CHECK(c.max_frame_bytes == (4ull << 20) + 1024 + (1ull << 20));
  }
}

TEST_CASE("default runtime directory follows XDG_RUNTIME_DIR, then root, then /tmp") {
  const char* rt = getenv("RUNTIME_DIRECTORY");
  const std::string saved_rt = rt ? rt : "";
  unsetenv("RUNTIME_DIRECTORY");
  const char* old = getenv("XDG_RUNTIME_DIR");
  const std::string saved = old ? old : "";
  setenv("XDG_RUNTIME_DIR", "/run/user/1234", 1);
  CHECK(default_runtime_dir(true) == "/run/user/1234/nearcache");
  CHECK(default_socket_path() == "/run/user/1234/nearcache/nearcached.sock");
  unsetenv("XDG_RUNTIME_DIR");
  CHECK(default_runtime_dir(true) == (getuid() == 0 ? std::string("/run/nearcache")
                                                : "/tmp/nearcache-" + std::to_string(getuid())));
  if (old) setenv("XDG_RUNTIME_DIR", saved.c_str(), 1);
  if (rt) setenv("RUNTIME_DIRECTORY", saved_rt.c_str(), 1);
}

TEST_CASE("systemd's RUNTIME_DIRECTORY comes first for the daemon, and is the directory itself") {
  const char* rt = getenv("RUNTIME_DIRECTORY");
  const std::string saved = rt ? rt : "";
  setenv("XDG_RUNTIME_DIR", "/run/user/1234", 1);
  setenv("RUNTIME_DIRECTORY", "/run/nearcache-app", 1);
  CHECK(default_runtime_dir(true) == "/run/nearcache-app");
  // A client's RUNTIME_DIRECTORY is its own unit's, not the daemon's.
  CHECK(default_runtime_dir(false) == "/run/user/1234/nearcache");
  CHECK(default_socket_path() == "/run/user/1234/nearcache/nearcached.sock");
  setenv("RUNTIME_DIRECTORY", "/run/a:/run/b", 1);  // RuntimeDirectory=a b
  CHECK(default_runtime_dir(true) == "/run/a");
  // Explicit paths (the packaged units pass them) are not affected.
  Config c;
  std::string err;
  REQUIRE(load_config({{"socket", "/run/nearcache/nearcached.sock"}, {"segment", "/run/nearcache/nearcached.seg"}},
                      &c, &err));
  CHECK(c.socket == "/run/nearcache/nearcached.sock");
  CHECK(c.segment == "/run/nearcache/nearcached.seg");
  setenv("RUNTIME_DIRECTORY", "", 1);
  CHECK(default_runtime_dir(true) == "/run/user/1234/nearcache");
  unsetenv("XDG_RUNTIME_DIR");
  if (rt) setenv("RUNTIME_DIRECTORY", saved.c_str(), 1);
  else unsetenv("RUNTIME_DIRECTORY");
}

TEST_CASE("a config file, overridden by flags") {
  TempFile f(
      "# comment\n"
      "socket = /tmp/from-file.sock\n"
      "segment_size = 32M\n"
      "key_limit = 250   \n"
      "posix_shm = true\n"
      "socket_mode = 0600\n"
      "allow_users = root, 0\n");
  Config c;
  std::string err;
  REQUIRE(load_config({{"config", f.path}, {"key_limit", "300"}}, &c, &err));
  CHECK(c.config == f.path);
  CHECK(c.socket == "/tmp/from-file.sock");
  CHECK(c.segment_size == 32ull << 20);
  CHECK(c.key_limit == 300);
  CHECK(c.posix_shm);
  CHECK(c.segment == "/nearcache-" + std::to_string(getuid()));
  CHECK(c.socket_mode == 0600);
  CHECK(c.allow_users == "root, 0");
}

TEST_CASE("errors name the option and the value") {
  Config c;
  std::string err;
  CHECK_FALSE(load_config({{"segment_size", "lots"}}, &c, &err));
  CHECK(err.find("segment_size") != std::string::npos);
  CHECK(err.find("lots") != std::string::npos);
  CHECK_FALSE(load_config({{"socket_mode", "0666"}}, &c, &err));
  CHECK(err.find("world-writable") != std::string::npos);
  CHECK_FALSE(load_config({{"log_level", "loud"}}, &c, &err));
  CHECK(err.find("log_level") != std::string::npos);
  CHECK_FALSE(load_config({{"key_limit", "70000"}}, &c, &err));
  CHECK_FALSE(load_config({{"allow_users", "no-such-user-here"}}, &c, &err));
  CHECK(err.find("no-such-user-here") != std::string::npos);
  CHECK_FALSE(load_config({{"heartbeat_grace_ms", "50"}}, &c, &err));
  CHECK_FALSE(load_config({{"config", "/nonexistent/nearcache.conf"}}, &c, &err));
  CHECK(err.find("/nonexistent/nearcache.conf") != std::string::npos);

  TempFile bad("no_such_option = 1\n");
  CHECK_FALSE(load_config({{"config", bad.path}}, &c, &err));
  CHECK(err.find("no_such_option") != std::string::npos);
  TempFile junk("segment_size = 12Q\n");
  CHECK_FALSE(load_config({{"config", junk.path}}, &c, &err));
  CHECK(err.find(junk.path) == 0);
}

TEST_CASE("print-config output is a config file that loads to the same values") {
  Config a, b;
  std::string err;
  REQUIRE(load_config({{"socket", "/tmp/a.sock"}, {"segment_size", "8M"}, {"max_ttl_ms", "5000"},
                       {"redis_prefix", "p:"}, {"allow_groups", "0"}},
                      &a, &err));
  TempFile f(config_text(a));
  REQUIRE(load_config({{"config", f.path}}, &b, &err));
  for (const auto& o : option_table()) {
    if (std::string(o.name) == "config") continue;
    INFO(o.name);
    CHECK(format_option(a, o) == format_option(b, o));
  }
}

TEST_CASE("command line") {
  const char* argv[] = {"nearcached", "--socket=/tmp/s", "--posix_shm", "--print-config", "--log_level", "debug"};
  Invocation inv;
  std::string err;
  REQUIRE(parse_command_line(6, const_cast<char**>(argv), &inv, &err));
  CHECK(inv.print_config);
  CHECK(inv.flags.at("socket") == "/tmp/s");
  CHECK(inv.flags.at("posix_shm") == "true");
  CHECK(inv.flags.at("log_level") == "debug");
  const char* bad[] = {"nearcached", "--nope=1"};
  CHECK_FALSE(parse_command_line(2, const_cast<char**>(bad), &inv, &err));
  const char* abbrev[] = {"nearcached", "--sock=/tmp/s"};  // no guessing of abbreviations
  CHECK_FALSE(parse_command_line(2, const_cast<char**>(abbrev), &inv, &err));
}

TEST_CASE("credentials in redis_url are masked") {
  Config c;
  c.redis.url = "redis://user:secret@cache.internal:6379/0";
  CHECK(format_option(c, *find_option("redis_url")) == "redis://***@cache.internal:6379/0");
  CHECK(config_text(c).find("secret") == std::string::npos);
}

TEST_CASE("the Redis tier's options are in the table and validated when redis_url is set") {
  Config c;
  std::string err;
  REQUIRE(load_config({{"redis_url", "unix:///run/redis.sock"}, {"redis_wait_ms", "250"},
                       {"redis_queue_max_bytes", "8M"}, {"redis_down", "error"}},
                      &c, &err));
  const auto& r = c.redis;
  CHECK(r.url == "unix:///run/redis.sock");
  CHECK(r.wait_ms == 250);
  CHECK(r.queue_max_bytes == 8ull << 20);
  CHECK(r.down == nearcache::redis::DownPolicy::error);
  CHECK(r.prefix == "nearcache:");
  // Each row of redis_options() is an option with the same default.
  for (const auto& row : nearcache::redis::redis_options()) {
    INFO(row.name);
    const OptionSpec* o = find_option(row.name);
    REQUIRE(o);
    CHECK(std::string(o->def) == row.def);
    CHECK(o->reloadable == row.reloadable);
  }
  CHECK_FALSE(load_config({{"redis_down", "maybe"}}, &c, &err));
  CHECK(err.find("redis_down") != std::string::npos);
  CHECK(load_config({{"redis_url", "rediss://h"}}, &c, &err));
  CHECK_FALSE(load_config({{"redis_url", "redis://h"}, {"redis_tls_verify", "false"}}, &c, &err));
  CHECK(err.find("rediss://") != std::string::npos);
  CHECK_FALSE(load_config({{"redis_url", "redis://h"}, {"redis_prefix", ""}}, &c, &err));
  CHECK_FALSE(load_config({{"redis_url", "redis://h"}, {"redis_reconnect_min_ms", "500"},
                           {"redis_reconnect_max_ms", "100"}},
                          &c, &err));
  CHECK(err.find("redis_reconnect_max_ms") != std::string::npos);
  // A password in the URL and a password file: which one? Refused.
  CHECK_FALSE(load_config({{"redis_url", "redis://:pw@h"}, {"redis_password_file", "/etc/pw"}}, &c, &err));
  CHECK(err.find("redis_password_file") != std::string::npos);
  // With a password file, redis://user@host names an ACL user.
  CHECK(load_config({{"redis_url", "redis://alice@h"}, {"redis_password_file", "/etc/pw"}}, &c, &err));
  // Without redis_url, the other redis options are not checked against it.
  CHECK(load_config({{"redis_prefix", ""}}, &c, &err));
}

TEST_CASE("every option has a help text and the docs list it") {
  const std::string md = config_markdown();
  for (const auto& o : option_table()) {
    INFO(o.name);
    CHECK(std::string(o.help).size() > 10);
    CHECK(md.find(std::string("`") + o.name + "`") != std::string::npos);
    CHECK(help_text("nearcached").find(std::string("--") + o.name + "=") != std::string::npos);
  }
}

TEST_CASE("each row's bounds are checked, with the option's name") {
  for (const auto& o : option_table()) {
    if (o.type != OptType::size && o.type != OptType::count) continue;
    INFO(o.name);
    // The Redis tier's rows are checked only with redis_url set.
    std::map<std::string, std::string> flags;
    if (std::string(o.name).rfind("redis_", 0) == 0) flags["redis_url"] = "redis://h";
    Config c;
    std::string err;
    if (o.min > 0) {
      flags[o.name] = std::to_string(o.min - 1);
      CHECK_FALSE(load_config(flags, &c, &err));
      CHECK(err.find(o.name) != std::string::npos);
    }
    if (o.max != kNoMax) {
      flags[o.name] = std::to_string(o.max + 1);
      CHECK_FALSE(load_config(flags, &c, &err));
      CHECK(err.find(o.name) != std::string::npos);
    }
  }
  // The message says the bounds as a config file writes them.
  Config c;
  std::string err;
  CHECK_FALSE(load_config({{"max_output_bytes", "4095"}}, &c, &err));
  CHECK(err == "option max_output_bytes: must be at least 4K (got 4095)");
}

TEST_CASE("SIGHUP's rule is the rows' reloadable column: copy_reloadable copies exactly those") {
  Config from, to;
  std::string err;
  // A value other than the default for every option.
  for (const auto& o : option_table()) {
    std::string v;
    switch (o.type) {
      case OptType::boolean: v = std::string(o.def) == "true" ? "false" : "true"; break;
      case OptType::mode: v = "0600"; break;
      case OptType::size:
      case OptType::count: v = "7"; break;
      case OptType::secret: v = "redis://h"; break;
      default: v = std::string(o.name) == "redis_down" ? "error" : "/other"; break;
    }
    REQUIRE(assign_option(&from, o, v, &err));
    REQUIRE(format_option(from, o) != format_option(to, o));
  }
  copy_reloadable(from, &to);
  for (const auto& o : option_table()) {
    INFO(o.name);
    CHECK((format_option(from, o) == format_option(to, o)) == o.reloadable);
  }
}
