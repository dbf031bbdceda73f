// daemon/cli/top_view.cc — see top_view.h.
#include "cli/top_view.h"

#include <poll.h>
#include <signal.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <ctime>
#include <map>
#include <memory>
#include <vector>

#include "cli/client.h"
#include "cli/command_line.h"
#include "cli/msgpack_bytes.h"
#include "cli/status_format.h"
#include "protocol/protocol.h"

namespace nearcache::daemon {

namespace {

volatile sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

using Clock = std::chrono::steady_clock;

// What one STATUS said, as top uses it.
struct Sample {
  bool ok = false;
  std::string error;
  Clock::time_point at;
  std::map<std::string, double> n;  // every numeric top-level field
  std::string version, redis_state, prefix_table;
  bool redis = false, coherent = false, degraded = false;
  double get(const char* k) const {
    auto it = n.find(k);
    return it == n.end() ? NAN : it->second;
  }
};

class Source {
 public:
  explicit Source(const TopOptions& o) : o_(o) {}
  Sample take() {
    Sample s;
    std::string err;
    if (!c_) {
      c_ = std::make_unique<BlockingClient>();
      if (!c_->connect(o_.socket, o_.timeout_ms, &err)) return fail(&s, err);
    }
    msgpack::object_handle h;
    if (!c_->call(uint32_t(Op::status), [](auto&) {}, 0, &h, &err)) return fail(&s, err);
    s.at = Clock::now();
    const msgpack::object& r = h.get();
    if (r.type != msgpack::type::ARRAY || r.via.array.size < 3 || r.via.array.ptr[2].type != msgpack::type::MAP)
      return fail(&s, "bad STATUS reply");
    const msgpack::object& st = r.via.array.ptr[2];
    for (uint32_t i = 0; i < st.via.map.size; ++i) {
      const double v = status_number(&st.via.map.ptr[i].val);
      if (!std::isnan(v)) s.n[std::string(str_of(st.via.map.ptr[i].key))] = v;
    }
    if (const msgpack::object* v = status_field(st, "version")) s.version = str_of(*v);
    if (const msgpack::object* rd = status_field(st, "redis")) {
      s.redis = true;
      if (const msgpack::object* v = status_field(*rd, "state")) s.redis_state = str_of(*v);
      const msgpack::object* c = status_field(*rd, "coherent");
      const msgpack::object* d = status_field(*rd, "degraded");
      s.coherent = c && c->type == msgpack::type::BOOLEAN && c->via.boolean;
      s.degraded = d && d->type == msgpack::type::BOOLEAN && d->via.boolean;
    }
    s.prefix_table = prefix_traffic_text(st, "");
    s.ok = true;
    return s;
  }

 private:
  Sample fail(Sample* s, const std::string& err) {
    c_.reset();  // reconnect next time
    s->at = Clock::now();
    s->error = err;
    return std::move(*s);
  }
  const TopOptions& o_;
  std::unique_ptr<BlockingClient> c_;
};

// Per-second rates and the interval's ratio between two good samples.
struct Rates {
  double dt, requests, shm_lookups, ops, hits, shm_hits, daemon_hits, daemon_misses, local_misses, misses, sets, deletes,
      evictions,
      expirations, ratio;
};

Rates rates(const Sample& a, const Sample& b) {
  Rates r{};
  r.dt = std::chrono::duration<double>(b.at - a.at).count();
  auto d = [&](const char* k) {
    const double x = b.get(k) - a.get(k);
    return r.dt > 0 && x > 0 ? x / r.dt : 0.0;  // a restart (counters went down) reads as 0
  };
  r.requests = d("requests_total");
  r.shm_hits = d("shm_hits_total");
  r.shm_lookups = r.shm_hits + d("shm_misses_total") + d("shm_busy_total");
  r.ops = r.requests + r.shm_lookups;
  r.daemon_hits = d("daemon_hits_total");
  r.hits = d("hits_total");
  // misses_total counts each miss once: the daemon's plus those readers
  // answered themselves (shm_local_misses_total).
  r.misses = d("misses_total");
  r.local_misses = std::min(r.misses, d("shm_local_misses_total"));
  r.daemon_misses = r.misses - r.local_misses;
  r.sets = d("sets_total") + d("adds_total");
  r.deletes = d("deletes_total");
  r.evictions = d("evictions_total");
  r.expirations = d("expirations_total");
  r.ratio = r.hits + r.misses > 0 ? r.hits / (r.hits + r.misses) : NAN;
  return r;
}

std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string fmt(const char* f, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, f);
  vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}

std::string pct(double r) { return std::isnan(r) ? "-" : fmt("%.1f%%", r * 100); }
std::string clock_text() {
  const time_t t = time(nullptr);
  struct tm tm;
  localtime_r(&t, &tm);
  char b[16];
  strftime(b, sizeof b, "%H:%M:%S", &tm);
  return b;
}
std::string duration_text(double s) {
  if (std::isnan(s)) return "?";
  const long v = long(s);
  if (v >= 86400) return fmt("%ldd %ldh", v / 86400, v % 86400 / 3600);
  if (v >= 3600) return fmt("%ldh %ldm", v / 3600, v % 3600 / 60);
  if (v >= 60) return fmt("%ldm %lds", v / 60, v % 60);
  return fmt("%lds", v);
}
std::string redis_text(const Sample& s) {
  if (!s.redis) return "-";
  return s.redis_state + (s.degraded ? " DEGRADED" : "") + (s.coherent ? "" : " (not coherent)");
}

// The full-screen frame (a terminal); `prev` is nullptr before the first interval.
std::vector<std::string> frame(const TopOptions& o, const Sample* prev, const Sample& cur) {
  std::vector<std::string> l;
  l.push_back(fmt("nearcache top: %s every %.1f s, %s   (q quits)", o.socket.c_str(), o.interval_s, clock_text().c_str()));
  if (!cur.ok) {
    l.push_back("");
    l.push_back("daemon not reachable: " + cur.error);
    l.push_back("(trying again every interval)");
    return l;
  }
  l.push_back(fmt("nearcached %s, pid %.0f, up %s", cur.version.c_str(), cur.get("pid"),
                  duration_text(cur.get("uptime_s")).c_str()));
  l.push_back("");
  if (!prev) {
    l.push_back("(first interval: rates follow)");
  } else {
    const Rates r = rates(*prev, cur);
    l.push_back(fmt("%-12s %10.0f/s   daemon requests %.0f/s, shared-memory lookups %.0f/s", "operations", r.ops,
                    r.requests, r.shm_lookups));
    l.push_back(fmt("%-12s %10.0f/s   from shared memory %.0f/s, from the daemon %.0f/s", "hits", r.hits, r.shm_hits,
                    r.daemon_hits));
    l.push_back(fmt("%-12s %10.0f/s   from the daemon %.0f/s, answered in readers %.0f/s", "misses", r.misses,
                    r.daemon_misses, r.local_misses));
    l.push_back(fmt("%-12s %12s   last interval; STATUS: %s last minute, %s since start", "hit ratio",
                    pct(r.ratio).c_str(),
                    pct(cur.get("hit_ratio_1m")).c_str(), pct(cur.get("hit_ratio")).c_str()));
    l.push_back(fmt("%-12s %10.0f/s   deletes %.0f/s", "writes", r.sets, r.deletes));
    l.push_back(fmt("%-12s %10.0f/s   expirations %.0f/s", "evictions", r.evictions, r.expirations));
  }
  const double used = cur.get("memory_used_bytes"), data = cur.get("memory_data_bytes");
  l.push_back(fmt("%-12s %12s   of %s (%.1f%%), %.0f entries", "memory", human_bytes(used).c_str(),
                  human_bytes(data).c_str(), data > 0 ? 100 * used / data : 0.0, cur.get("entries")));
  l.push_back(fmt("%-12s %12.0f   connections, %.0f reader processes", "clients", cur.get("connections_open"),
                  cur.get("reader_processes")));
  if (cur.redis)
    l.push_back(fmt("%-12s %12s   write-behind queue %.0f (%s)", "redis", redis_text(cur).c_str(),
                    cur.get("redis_queue_depth"), human_bytes(cur.get("redis_queue_bytes")).c_str()));
  else
    l.push_back(fmt("%-12s %12s   (no Redis tier)", "redis", "-"));
  if (!cur.prefix_table.empty()) {
    l.push_back("");
    size_t at = 0;
    while (at < cur.prefix_table.size()) {
      const size_t nl = cur.prefix_table.find('\n', at);
      l.push_back(cur.prefix_table.substr(at, nl - at));
      at = nl == std::string::npos ? nl : nl + 1;
    }
  }
  return l;
}

constexpr const char* kPlainHeader =
    "TIME        OPS/S     HITS/S   MISSES/S   RATIO       USED    ENTRIES  EVICT/S  CONNS  REDIS  QUEUE";

std::string plain_line(const Sample& prev, const Sample& cur) {
  if (!cur.ok) return clock_text() + "  daemon not reachable: " + cur.error;
  const Rates r = rates(prev, cur);
  return fmt("%-8s %8.0f %10.0f %10.0f %7s %10s %10.0f %8.0f %6.0f  %-5s %6s", clock_text().c_str(), r.ops, r.hits,
             r.misses, pct(r.ratio).c_str(), human_bytes(cur.get("memory_used_bytes")).c_str(), cur.get("entries"),
             r.evictions, cur.get("connections_open"), cur.redis ? cur.redis_state.c_str() : "-",
             cur.redis ? fmt("%.0f", cur.get("redis_queue_depth")).c_str() : "-");
}

// The terminal as top found it, restored by the destructor on every way out.
class Terminal {
 public:
  Terminal(bool screen, bool keys) : screen_(screen) {
    if (keys && tcgetattr(STDIN_FILENO, &saved_) == 0) {
      termios raw = saved_;
      raw.c_lflag &= ~tcflag_t(ICANON | ECHO);  // ISIG stays: Ctrl-C is SIGINT
      raw.c_cc[VMIN] = 0;
      raw.c_cc[VTIME] = 0;
      keys_ = tcsetattr(STDIN_FILENO, TCSAFLUSH, &raw) == 0;
    }
    if (screen_) fputs("\x1b[?1049h\x1b[?25l", stdout);  // alternate screen, cursor hidden
  }
  ~Terminal() {
    if (screen_) fputs("\x1b[?25h\x1b[?1049l", stdout);
    fflush(stdout);
    if (keys_) tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_);
  }
  bool keys() const { return keys_; }

 private:
  bool screen_, keys_ = false;
  termios saved_{};
};

// Waits until `until`; false when top should stop (q, a signal).
bool wait_until(Clock::time_point until, bool keys) {
  while (!g_stop) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now()).count();
    if (left <= 0) return true;
    pollfd p{STDIN_FILENO, POLLIN, 0};
    const int r = poll(keys ? &p : nullptr, keys ? 1 : 0, int(left));
    if (r > 0 && (p.revents & POLLIN)) {
      char buf[64];
      const ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
      for (ssize_t i = 0; i < n; ++i)
        if (buf[i] == 'q' || buf[i] == 'Q') return false;
    } else if (r > 0) {
      keys = false;  // stdin closed or in error: stop watching it
    }
  }
  return false;
}

}  // namespace

int run_top(const TopOptions& o) {
  g_stop = 0;
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  struct sigaction old_int, old_term, old_hup;
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);
  sigaction(SIGHUP, &sa, &old_hup);
  const bool tty = isatty(STDOUT_FILENO);
  int rc = kExitUnreachable;
  {
    Terminal term(tty, isatty(STDIN_FILENO));
    Source src(o);
    Sample prev = src.take();
    bool reached = prev.ok;
    const auto step = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.interval_s));
    auto next = Clock::now() + step;
    if (tty) {
      std::string out = "\x1b[H";
      for (const auto& line : frame(o, nullptr, prev)) out += line + "\x1b[K\n";
      fputs((out + "\x1b[J").c_str(), stdout);
      fflush(stdout);
    }
    long lines = 0;
    for (long shown = 0; (o.count == 0 || shown < o.count) && wait_until(next, term.keys()); ++shown) {
      next += step;
      if (next < Clock::now()) next = Clock::now() + step;  // fell behind (a slow STATUS): do not burst
      Sample cur = src.take();
      reached |= cur.ok;
      if (tty) {
        std::string out = "\x1b[H";
        for (const auto& line : frame(o, prev.ok ? &prev : nullptr, cur)) out += line + "\x1b[K\n";
        fputs((out + "\x1b[J").c_str(), stdout);
      } else {
        if (lines++ % 20 == 0) puts(kPlainHeader);
        if (prev.ok || !cur.ok) puts(plain_line(prev, cur).c_str());
        else puts((clock_text() + "  (daemon reached again: rates follow)").c_str());
      }
      fflush(stdout);
      prev = std::move(cur);
    }
    rc = reached ? 0 : kExitUnreachable;
  }
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  sigaction(SIGHUP, &old_hup, nullptr);
  return rc;
}

}  // namespace nearcache::daemon
