// daemon/server/server.cc — see server.h.
#include "server/server.h"

#include <fcntl.h>
#include <linux/sockios.h>
#include <malloc.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <spdlog/spdlog.h>

#include "server/log.h"
#include "writer.h"

namespace nearcache::daemon {

namespace {
constexpr size_t kReadChunk = 16 << 10;      // read buffer grown per read
constexpr size_t kKeepInput = 64 << 10;      // an idle connection keeps at most this much buffer
constexpr uint64_t kExpireEveryMs = 100;     // expiry sweep tick
constexpr uint64_t kExpireBudgetNs = 1000000; // per tick
constexpr uint64_t kClearBudgetUs = 2000;    // CLEAR work per loop turn
// Hit regions (op HITS) are read every kHitsEveryMs, at most kHitsPerTick of
// them per tick (a few preads each): a region's ring holds kHitRing hits, so
// a process's hits are all seen up to about 200k hits/s, sampled above.
constexpr uint64_t kHitsEveryMs = 20;
constexpr size_t kHitsPerTick = 64;
// A connection whose requests wait behind a blocking one (Session::blocked)
// stops being read once this much input is buffered.
constexpr size_t kBlockedInputMax = 1 << 20;
// One connection's share of a loop turn (Session::budget): then the loop
// serves the others and its timers, and this one goes on next turn.
constexpr size_t kFeedFrames = 256;
constexpr size_t kFeedBytes = 4 << 20;  // request bytes consumed, reply bytes produced

std::string errno_text(int e) { return std::strerror(e); }
}  // namespace

struct WriteReq;

struct Conn {
  uv_pipe_t pipe;
  Server* srv;
  Session s;
  size_t writing = 0;  // bytes in the uv_write in flight
  WriteReq* wreq = nullptr;  // that write
  size_t counted = 0;  // its share of Server::pending_total_
  bool eof = false, closed = false, dirty = false;
  // Reading stopped by flow control: its session is blocked with much input
  // buffered, its unread replies reached max_output_bytes, or it used its
  // share of the loop turn (Session::yielded). update_reading() restarts it.
  bool paused = false;
  bool held = false;  // input left unexecuted because its replies are at max_output_bytes
  // At max_output_bytes: the last time its replies moved (ms) and what the
  // kernel held then, to tell a slow reader from one that reads nothing.
  uint64_t stalled_since_ms = 0;
  int stalled_outq = -1;
  // A file descriptor the peer sent (SCM_RIGHTS) that no HITS has claimed
  // yet; at most one is kept (others are closed at once), none once its
  // input is used up without a HITS.
  int fd = -1;
};

struct WriteReq {
  uv_write_t req;
  Conn* c;
  std::string data;
  size_t off;
};

Server::Server(uv_loop_t* loop, Engine* engine, const Config& cfg, std::map<std::string, std::string> flags)
    : loop_(loop), engine_(engine), cfg_(cfg), flags_(std::move(flags)) {
  resolve_allow_lists(cfg_);
  uv_timer_init(loop_, &heartbeat_);
  uv_timer_init(loop_, &expire_);
  uv_timer_init(loop_, &hits_);
  uv_timer_init(loop_, &deadline_);
  uv_timer_init(loop_, &stop_timer_);
  uv_idle_init(loop_, &idle_);
  uv_check_init(loop_, &check_);
  for (uv_handle_t* h : {reinterpret_cast<uv_handle_t*>(&heartbeat_), reinterpret_cast<uv_handle_t*>(&expire_),
                         reinterpret_cast<uv_handle_t*>(&deadline_), reinterpret_cast<uv_handle_t*>(&stop_timer_),
                         reinterpret_cast<uv_handle_t*>(&idle_), reinterpret_cast<uv_handle_t*>(&check_),
                         reinterpret_cast<uv_handle_t*>(&hits_)})
    h->data = this;
  engine_->set_hooks({
      [this](Session* s) { mark_dirty(static_cast<Conn*>(s->transport)); },
      [this] {
        if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(&idle_))) uv_idle_start(&idle_, on_idle);
      },
      [this] { arm_deadline(); },
      [this](Session* s) {
        resume_.push_back(s->id);
        // The idle handle keeps the loop from sleeping until the session is fed.
        if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(&idle_))) uv_idle_start(&idle_, on_idle);
      },
  });
  engine_->set_fd_source([](Session* s) {
    Conn* c = static_cast<Conn*>(s->transport);
    const int fd = c->fd;
    c->fd = -1;
    return fd;
  });
}

Server::~Server() = default;

void Server::set_stop_grace_ms(uint64_t ms) { stop_grace_ms_ = std::max<uint64_t>(ms, 5000); }

void Server::on_check(uv_check_t* h) {
  // Replies produced outside the server's own callbacks (the Redis tier's
  // replies and timers) go out at the end of the loop turn that made them.
  auto* self = static_cast<Server*>(h->data);
  if (!self->dirty_.empty()) self->flush_dirty();
}

void Server::resolve_allow_lists(const Config& cfg) {
  std::string err;
  allow_uids_.clear();
  allow_gids_.clear();
  // Validated by load_config already; a name removed since then is logged.
  if (!resolve_users(cfg.allow_users, &allow_uids_, &err) || !resolve_groups(cfg.allow_groups, &allow_gids_, &err))
    spdlog::error("allow list: {}", err);
  allow_list_ = !cfg.allow_users.empty() || !cfg.allow_groups.empty();
}

bool Server::allowed(uint32_t uid, uint32_t gid, std::string* why) const {
  if (!allow_list_ || uid == getuid()) return true;
  if (std::find(allow_uids_.begin(), allow_uids_.end(), uid) != allow_uids_.end()) return true;
  if (std::find(allow_gids_.begin(), allow_gids_.end(), gid) != allow_gids_.end()) return true;
  *why = "NOT_ALLOWED: uid " + std::to_string(uid) + " (gid " + std::to_string(gid) +
         ") is not in allow_users or allow_groups";
  return false;
}

// ---------------------------------------------------------------- start

bool check_socket(const std::string& path, std::string* err) {
  // An existing socket: refuse if a daemon answers on it, replace it if stale.
  struct stat st;
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      *err = path + " exists and is not a socket; refusing to replace it";
      return false;
    }
    const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::memcpy(sa.sun_path, path.c_str(), path.size());
    const int rc = connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
    const int e = errno;
    close(fd);
    if (rc == 0) {
      *err = "another nearcached is already listening on " + path + "; refusing to start a second one";
      return false;
    }
    if (e != ECONNREFUSED) {
      *err = "cannot check the existing socket " + path + ": " + errno_text(e);
      return false;
    }
    spdlog::info("replacing stale socket {} (no daemon answers on it)", path);
    if (unlink(path.c_str()) != 0 && errno != ENOENT) {
      *err = "cannot remove stale socket " + path + ": " + errno_text(errno);
      return false;
    }
  }
  return true;
}

bool Server::start(std::string* err) {
  const std::string& path = cfg_.socket;
  // Reply buffers of up to max_output_bytes come and go with slow readers:
  // buffers of 1 MiB and more are mapped and unmapped (glibc would otherwise
  // raise this threshold and keep freed ones), so that the daemon's memory
  // follows the output bounds instead of its high-water mark.
  mallopt(M_MMAP_THRESHOLD, 1 << 20);
  if (!check_socket(path, err)) return false;

  uv_pipe_init(loop_, &listener_, 0);
  listener_.data = this;
  // Created owner-only, then opened up to socket_mode: never wider than configured.
  const mode_t old = umask(0177);
  int r = uv_pipe_bind(&listener_, path.c_str());
  umask(old);
  if (r == 0 && chmod(path.c_str(), cfg_.socket_mode) != 0) r = -errno;
  int64_t gid = -1;
  std::string gerr;
  resolve_group(cfg_.socket_group, &gid, &gerr);
  if (r == 0 && gid >= 0 && chown(path.c_str(), uid_t(-1), gid_t(gid)) != 0) r = -errno;
  if (r == 0) r = uv_listen(reinterpret_cast<uv_stream_t*>(&listener_), 511, on_connection);
  if (r != 0) {
    *err = "cannot listen on " + path + ": " + uv_strerror(r);
    uv_close(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
    return false;
  }
  struct stat st;
  if (lstat(path.c_str(), &st) == 0) {
    socket_dev_ = st.st_dev;
    socket_ino_ = st.st_ino;
  }
  listening_ = true;

  uv_timer_start(&heartbeat_, on_heartbeat, cfg_.heartbeat_interval_ms, cfg_.heartbeat_interval_ms);
  uv_timer_start(&expire_, on_expire, kExpireEveryMs, kExpireEveryMs);
  uv_timer_start(&hits_, on_hits, kHitsEveryMs, kHitsEveryMs);
  uv_check_start(&check_, on_check);
  uv_unref(reinterpret_cast<uv_handle_t*>(&check_));
  last_beat_ns_ = uv_hrtime();
  for (auto [h, sig] : {std::pair{&sig_term_, SIGTERM}, std::pair{&sig_int_, SIGINT}, std::pair{&sig_hup_, SIGHUP}}) {
    uv_signal_init(loop_, h);
    h->data = this;
    uv_signal_start(h, on_signal, sig);
  }

  shm::Writer* w = engine_->writer();
  // Without a Redis tier the table is the whole truth: readers may answer a
  // miss without asking (cleared again when the daemon stops). The
  // `authoritative` option turns that off.
  w->set_authoritative(engine_->tier() == nullptr && cfg_.authoritative);
  spdlog::info("nearcached {} pid {} listening on {} (mode {:04o}); segment {} ({} bytes, generation {})", kVersion,
               getpid(), path, cfg_.socket_mode, w->path(), w->stats().segment_bytes, w->generation());
  sd_notifyf(0, "READY=1\nSTATUS=listening on %s\nMAINPID=%d", path.c_str(), int(getpid()));
  if (print_banner) {
    printf("nearcached is listening on %s\n  segment: %s\n  try: nearcache --socket=%s status   (Ctrl-C stops the daemon)\n",
           path.c_str(), w->path().c_str(), path.c_str());
    fflush(stdout);
  }
  return true;
}

void Server::run() {
  uv_run(loop_, UV_RUN_DEFAULT);
  // The signal handlers stayed (unreferenced) until everything else was done,
  // so that a second signal during the Redis drain is still handled.
  for (uv_handle_t* h : {reinterpret_cast<uv_handle_t*>(&sig_term_), reinterpret_cast<uv_handle_t*>(&sig_int_),
                         reinterpret_cast<uv_handle_t*>(&sig_hup_), reinterpret_cast<uv_handle_t*>(&heartbeat_)})
    if (h->loop == loop_ && !uv_is_closing(h)) uv_close(h, nullptr);
  engine_->writer()->heartbeat();  // the last beat: the caller stops the table next
  uv_run(loop_, UV_RUN_DEFAULT);
}

// ---------------------------------------------------------------- connections

void Server::on_connection(uv_stream_t* server, int status) {
  auto* self = static_cast<Server*>(server->data);
  if (status < 0) {
    spdlog::warn("accept: {}", uv_strerror(status));
    return;
  }
  self->accept_one();
  self->flush_dirty();
}

void Server::accept_one() {
  auto* c = new Conn();
  c->srv = this;
  // ipc = 1: libuv then reads with recvmsg and keeps the descriptors a peer
  // sends (HITS passes its hit region so); take_fds() claims them.
  uv_pipe_init(loop_, &c->pipe, 1);
  c->pipe.data = c;
  if (uv_accept(reinterpret_cast<uv_stream_t*>(&listener_), reinterpret_cast<uv_stream_t*>(&c->pipe)) != 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(&c->pipe), on_close);
    return;
  }
  c->s.id = next_conn_id_++;
  c->s.transport = c;
  conns_[c->s.id] = c;
  uv_os_fd_t fd;
  ucred cr{};
  socklen_t len = sizeof cr;
  if (uv_fileno(reinterpret_cast<uv_handle_t*>(&c->pipe), &fd) == 0 &&
      getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) == 0) {
    c->s.uid = cr.uid;
    c->s.gid = cr.gid;
    c->s.pid = cr.pid;
  }
  auto& counters = engine_->counters();
  std::string why;
  if (!allowed(c->s.uid, c->s.gid, &why)) {
    counters.refused_total++;
    spdlog::warn("refused connection from uid {} gid {} pid {}: not in allow_users / allow_groups", c->s.uid, c->s.gid,
                 c->s.pid);
    engine_->refuse(&c->s, Code::not_allowed, why);
    return;
  }
  if (engine_->sessions().size() >= cfg_.max_connections) {
    counters.refused_total++;
    spdlog::warn("refused connection from uid {} pid {}: max_connections ({}) reached", c->s.uid, c->s.pid,
                 cfg_.max_connections);
    engine_->refuse(&c->s, Code::unavailable,
                    "UNAVAILABLE: too many connections (max_connections " + std::to_string(cfg_.max_connections) + ")");
    return;
  }
  counters.connections_total++;
  engine_->attach(&c->s);
  spdlog::debug("conn {}: connected, uid {} gid {} pid {}", c->s.id, c->s.uid, c->s.gid, c->s.pid);
  uv_read_start(reinterpret_cast<uv_stream_t*>(&c->pipe), on_alloc, on_read);
}

void Server::on_alloc(uv_handle_t* h, size_t, uv_buf_t* buf) {
  auto* c = static_cast<Conn*>(h->data);
  size_t want = kReadChunk;
  // A frame whose header promised more bytes: make room for all of it at once.
  const size_t need = c->s.scanner.needed(), have = c->s.in.size();
  if (need > have) want = std::max(want, need - have);
  buf->base = reinterpret_cast<char*>(c->s.in.reserve(want));
  buf->len = c->s.in.room();
}

void Server::on_read(uv_stream_t* st, ssize_t nread, const uv_buf_t*) {
  auto* c = static_cast<Conn*>(st->data);
  Server* self = c->srv;
  self->take_fds(c);
  if (nread > 0) {
    c->s.in.commit(size_t(nread));
    self->engine_->counters().bytes_received_total += uint64_t(nread);
    self->serve(c);
    // A descriptor that came without a HITS request is not kept.
    if (c->fd >= 0 && !c->closed && c->s.in.size() == 0) {
      ::close(c->fd);
      c->fd = -1;
    }
  } else if (nread == UV_EOF) {
    // A peer that closed its socket is gone (its waits are dropped now); one
    // that only shut down writing still gets every reply, then is closed.
    uv_os_fd_t fd;
    pollfd p{-1, 0, 0};
    if (uv_fileno(reinterpret_cast<uv_handle_t*>(st), &fd) == 0) p.fd = fd;
    if (p.fd < 0 || (poll(&p, 1, 0) == 1 && (p.revents & POLLHUP))) {
      self->close_conn(c, "client closed the connection");
    } else {
      c->eof = true;
      uv_read_stop(st);
      self->flush(c);  // closes once every reply is out
    }
  } else if (nread < 0) {
    self->close_conn(c, std::string("read: ") + uv_strerror(int(nread)));
  }
  self->flush_dirty();
}

size_t Server::pending(const Conn* c) const { return c->writing + c->s.out.bytes.size(); }

void Server::count_pending(Conn* c) {
  const size_t now = c->closed ? 0 : pending(c);
  pending_total_ = pending_total_ - c->counted + now;
  c->counted = now;
}

bool Server::output_full(const Conn* c) const { return pending(c) >= engine_->config().max_output_bytes; }

// Executes what the connection sent, within its share of the loop turn and
// of the output bounds, then sends the replies and decides whether to read on.
void Server::serve(Conn* c) {
  if (c->closed) return;
  Session& s = c->s;
  s.yielded = false;
  size_t room = output_full(c) ? 0 : engine_->config().max_output_bytes - pending(c);
  const uint64_t total = cfg_.max_output_bytes_total;
  if (room > 0 && total > 0) {
    count_pending(c);
    // All connections together at the bound: the one holding the most unread
    // replies goes (it may be this one), so that the others are served.
    while (pending_total_ >= total && !c->closed) {
      Conn* big = nullptr;
      for (auto& [id, o] : conns_)
        if (!o->closed && (!big || pending(o) > pending(big))) big = o;
      if (!big || pending(big) == 0) break;
      engine_->counters().slow_clients_total++;
      spdlog::warn("conn {} (uid {} pid {}) disconnected: slow reader: {} bytes of replies unread, the most of "
                   "any connection, with all connections together over max_output_bytes_total {}",
                   big->s.id, big->s.uid, big->s.pid, pending(big), total);
      close_conn(big, "slow reader (max_output_bytes_total)");
    }
    if (c->closed) return;
    room = std::min<size_t>(room, pending_total_ < total ? total - pending_total_ : 0);
  }
  // Input left unexecuted while the replies are at the bound: on_write goes
  // on once they drain.
  c->held = room == 0 && s.in.size() > 0;
  if (room > 0) {
    s.budget = FeedBudget{kFeedFrames, kFeedBytes, std::min(room, kFeedBytes)};
    engine_->feed(&s);
    s.budget = FeedBudget{};
  }
  s.in.shrink(kKeepInput);
  flush(c);
  update_reading(c);
}

void Server::update_reading(Conn* c) {
  if (c->closed) return;
  Session& s = c->s;
  const bool full = output_full(c);
  if (full && c->stalled_since_ms == 0) c->stalled_since_ms = uv_now(loop_), c->stalled_outq = -1;
  if (!full) c->stalled_since_ms = 0;
  const bool ended = s.closing || s.kill || c->eof || stopping_;  // never read again
  const bool stop = ended || s.yielded || c->held || full || (s.blocked && s.in.size() > kBlockedInputMax);
  if (stop && !c->paused) {
    uv_read_stop(reinterpret_cast<uv_stream_t*>(&c->pipe));
    c->paused = true;
  } else if (!stop && c->paused) {
    uv_read_start(reinterpret_cast<uv_stream_t*>(&c->pipe), on_alloc, on_read);
    c->paused = false;
  }
  // Its next share comes next loop turn (an EOF'd client's last requests too).
  if (!s.closing && !s.kill && (s.yielded || (c->held && !full))) schedule(c);
}

void Server::schedule(Conn* c) {
  again_.push_back(c->s.id);
  if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(&idle_))) uv_idle_start(&idle_, on_idle);
}

void Server::check_stalled() {
  // A connection at max_output_bytes whose replies do not move (neither our
  // write nor the kernel's queue toward the peer) for slow_reader_timeout_ms.
  const uint64_t limit = cfg_.slow_reader_timeout_ms, now = uv_now(loop_);
  if (limit == 0) return;
  std::vector<Conn*> cut;
  for (auto& [id, c] : conns_) {
    if (c->closed || c->stalled_since_ms == 0) continue;
    if (!output_full(c)) {
      c->stalled_since_ms = 0;
      continue;
    }
    int outq = -1;
    uv_os_fd_t fd;
    if (uv_fileno(reinterpret_cast<uv_handle_t*>(&c->pipe), &fd) == 0) ioctl(fd, SIOCOUTQ, &outq);
    if (outq != c->stalled_outq) {
      c->stalled_outq = outq;
      c->stalled_since_ms = now;
    } else if (now - c->stalled_since_ms >= limit) {
      cut.push_back(c);
    }
  }
  for (Conn* c : cut) {
    engine_->counters().slow_clients_total++;
    spdlog::warn("conn {} (uid {} pid {}) disconnected: slow reader: {} bytes of replies unread, over "
                 "max_output_bytes {}, none read for {} ms",
                 c->s.id, c->s.uid, c->s.pid, pending(c), engine_->config().max_output_bytes, limit);
    close_conn(c, "slow reader");
  }
}

void Server::mark_dirty(Conn* c) {
  if (c->dirty || c->closed) return;
  c->dirty = true;
  dirty_.push_back(c);
}

void Server::flush_dirty() {
  // flush() may close a connection, whose departure can answer others (a
  // lease handed over): repeat until nothing is left.
  while (!dirty_.empty()) {
    std::vector<Conn*> list;
    list.swap(dirty_);
    for (Conn* c : list) {
      c->dirty = false;
      flush(c);
    }
  }
}

void Server::flush(Conn* c) {
  if (c->closed) return;
  Session& s = c->s;
  if (s.kill) {
    spdlog::warn("conn {} (uid {} pid {}) disconnected: {}", s.id, s.uid, s.pid, s.close_reason);
    close_conn(c, s.close_reason);
    return;
  }
  std::string& out = s.out.bytes;
  auto* stream = reinterpret_cast<uv_stream_t*>(&c->pipe);
  if (!out.empty() && c->writing == 0) {
    uv_buf_t b = uv_buf_init(out.data(), unsigned(out.size()));
    int n = uv_try_write(stream, &b, 1);
    if (n == UV_EAGAIN) n = 0;
    if (n < 0) {
      close_conn(c, std::string("write: ") + uv_strerror(n));
      return;
    }
    engine_->counters().bytes_sent_total += uint64_t(n);
    if (size_t(n) == out.size()) {
      out.clear();
      if (out.capacity() > kKeepInput) std::string().swap(out);  // idle connections hold little memory
    } else {
      auto* w = new WriteReq();
      w->c = c;
      w->data.swap(out);
      w->off = size_t(n);
      w->req.data = w;
      uv_buf_t rest = uv_buf_init(w->data.data() + n, unsigned(w->data.size() - size_t(n)));
      const int r = uv_write(&w->req, stream, &rest, 1, on_write);
      if (r < 0) {
        delete w;
        close_conn(c, std::string("write: ") + uv_strerror(r));
        return;
      }
      c->writing = w->data.size() - w->off;
      c->wreq = w;
    }
  }
  // Over max_output_bytes it stops being served (serve()), so this is at
  // most one reply (or the replies of waits that completed) past the bound.
  count_pending(c);
  const size_t left = pending(c);
  if (left == 0 && s.closing) close_conn(c, s.close_reason);
  else if (left == 0 && c->eof && s.outstanding == 0 && !s.yielded && !c->held)
    close_conn(c, "client closed the connection");
}

void Server::on_write(uv_write_t* req, int status) {
  auto* w = static_cast<WriteReq*>(req->data);
  Conn* c = w->c;
  const size_t n = w->data.size() - w->off;
  delete w;
  if (c->closed) return;  // cancelled by close_conn; the Conn is freed in on_close
  Server* self = c->srv;
  c->writing = 0;
  c->wreq = nullptr;
  if (status < 0) {
    self->close_conn(c, std::string("write: ") + uv_strerror(status));
    self->flush_dirty();
    return;
  }
  self->engine_->counters().bytes_sent_total += n;
  self->flush(c);
  // Its replies drained below the bound: execute what it sent meanwhile.
  if (!c->closed && (c->paused || c->held) && !self->output_full(c)) self->schedule(c);
  self->flush_dirty();
}

void Server::close_conn(Conn* c, const std::string& reason) {
  if (c->closed) return;
  c->closed = true;
  count_pending(c);
  // Its unread replies go now, not when the loop gets to the close callbacks:
  // a slow reader cut to make room must make room at once. (The socket is
  // closed by uv_close below; the write cancelled later no longer reads its bytes.)
  std::string().swap(c->s.out.bytes);
  if (c->wreq) std::string().swap(c->wreq->data), c->wreq->off = 0;
  // A client that broke the framing is worth an operator's attention; ordinary closes are not.
  const bool broken = reason.rfind("BAD_FRAME", 0) == 0 || reason.rfind("FRAME_TOO_LARGE", 0) == 0;
  spdlog::log(broken ? spdlog::level::info : spdlog::level::debug, "conn {} (uid {} pid {}): closed ({}), {} requests",
              c->s.id, c->s.uid, c->s.pid, reason, c->s.requests);
  engine_->detach(&c->s);
  conns_.erase(c->s.id);
  if (c->fd >= 0) ::close(c->fd), c->fd = -1;
  uv_close(reinterpret_cast<uv_handle_t*>(&c->pipe), on_close);
}

void Server::on_close(uv_handle_t* h) {
  auto* c = static_cast<Conn*>(h->data);
  Server* self = c->srv;
  auto& d = self->dirty_;
  d.erase(std::remove(d.begin(), d.end(), c), d.end());
  delete c;
  self->maybe_finish_shutdown();
}

// ---------------------------------------------------------------- timers

void Server::on_heartbeat(uv_timer_t* t) {
  auto* self = static_cast<Server*>(t->data);
  const uint64_t now = uv_hrtime();
  const uint64_t expected = self->cfg_.heartbeat_interval_ms * 1000000;
  const uint64_t gap = now - self->last_beat_ns_;
  if (gap > expected) {
    const double lag_ms = double(gap - expected) / 1e6;
    auto& c = self->engine_->counters();
    if (lag_ms > c.loop_lag_max_ms) {
      c.loop_lag_max_ms = lag_ms;
      if (lag_ms > double(self->cfg_.heartbeat_grace_ms) / 4)
        spdlog::warn("event loop lagged {:.1f} ms (heartbeat grace {} ms)", lag_ms, self->cfg_.heartbeat_grace_ms);
    }
  }
  self->last_beat_ns_ = now;
  self->engine_->writer()->heartbeat();
}

void Server::on_hits(uv_timer_t* t) {
  auto* self = static_cast<Server*>(t->data);
  self->engine_->poll_hits(kHitsPerTick);
}

// Descriptors the peer sent arrive with the bytes libuv just read (an ipc
// pipe queues them): the first is kept for the HITS among those bytes, any
// other is closed at once. libuv hands a received descriptor over only by
// uv_accept into a handle; a pipe handle takes any descriptor (a memfd is
// not a socket: uv_pipe_pending_type would call it unknown), so accept into
// a temporary one, keep a duplicate, and close the handle (and its original).
void Server::take_fds(Conn* c) {
  auto* pipe = reinterpret_cast<uv_pipe_t*>(&c->pipe);
  while (uv_pipe_pending_count(pipe) > 0) {
    auto* tmp = new uv_pipe_t;
    uv_pipe_init(loop_, tmp, 0);
    int fd = -1;
    uv_os_fd_t raw;
    if (uv_accept(reinterpret_cast<uv_stream_t*>(pipe), reinterpret_cast<uv_stream_t*>(tmp)) == 0 &&
        uv_fileno(reinterpret_cast<uv_handle_t*>(tmp), &raw) == 0)
      fd = fcntl(raw, F_DUPFD_CLOEXEC, 0);
    uv_close(reinterpret_cast<uv_handle_t*>(tmp), [](uv_handle_t* h) { delete reinterpret_cast<uv_pipe_t*>(h); });
    if (fd < 0) continue;
    if (c->fd < 0) {
      c->fd = fd;
    } else {
      ::close(fd);
      spdlog::debug("conn {}: a second file descriptor in one request; closed", c->s.id);
    }
  }
}

void Server::on_expire(uv_timer_t* t) {
  auto* self = static_cast<Server*>(t->data);
  shm::Writer* w = self->engine_->writer();
  const uint64_t t0 = uv_hrtime();
  const uint64_t buckets = w->bucket_count();
  uint64_t swept = 0;
  // At most one pass over the table and about a millisecond per tick.
  do {
    w->expire_step(256);
    swept += 256;
  } while (swept < buckets && uv_hrtime() - t0 < kExpireBudgetNs);
  self->check_stalled();
  self->flush_dirty();
}

void Server::arm_deadline() {
  if (uv_is_closing(reinterpret_cast<uv_handle_t*>(&deadline_))) return;
  const uint64_t d = engine_->next_deadline();
  if (d == armed_deadline_) return;
  armed_deadline_ = d;
  if (d == UINT64_MAX) {
    uv_timer_stop(&deadline_);
    return;
  }
  const uint64_t now = engine_->now_ms();
  uv_timer_start(&deadline_, on_deadline, d > now ? d - now : 0, 0);
}

void Server::on_deadline(uv_timer_t* t) {
  auto* self = static_cast<Server*>(t->data);
  self->armed_deadline_ = UINT64_MAX;
  self->engine_->on_deadlines();
  self->arm_deadline();
  self->flush_dirty();
}

void Server::on_idle(uv_idle_t* h) {
  auto* self = static_cast<Server*>(h->data);
  self->engine_->clear_work(kClearBudgetUs);
  // Connections that used their share last turn go on now (each once a turn).
  self->resume_.insert(self->resume_.end(), self->again_.begin(), self->again_.end());
  self->again_.clear();
  self->resume_sessions();
  // Asked after resuming: a resumed connection may have started a CLEAR.
  if (!self->engine_->clears_pending() && self->resume_.empty() && self->again_.empty()) uv_idle_stop(h);
  self->flush_dirty();
}

void Server::resume_sessions() {
  while (!resume_.empty()) {
    std::vector<uint64_t> ids;
    ids.swap(resume_);
    for (uint64_t id : ids) {
      auto it = conns_.find(id);
      if (it == conns_.end()) continue;
      Conn* c = it->second;
      if (c->closed || c->s.blocked) continue;
      serve(c);
    }
  }
}

// ---------------------------------------------------------------- signals, reload, shutdown

void Server::on_signal(uv_signal_t* h, int signum) {
  auto* self = static_cast<Server*>(h->data);
  if (signum == SIGHUP) {
    self->reload();
    return;
  }
  if (self->stopping_) {
    spdlog::warn("second {}: closing every connection now{}", strsignal(signum),
                 self->on_shutdown ? " (the Redis write-behind queue keeps draining until redis_drain_timeout_ms)"
                                   : "");
    std::vector<Conn*> all;
    for (auto& [id, c] : self->conns_) all.push_back(c);
    for (Conn* c : all) self->close_conn(c, "forced shutdown");
    self->flush_dirty();
    return;
  }
  self->shutdown(signum == SIGTERM ? "SIGTERM" : "SIGINT");
}

void Server::shutdown(const char* why) {
  if (stopping_) return;
  stopping_ = true;
  spdlog::info("{}: stopping; {} connection(s) open", why, conns_.size());
  sd_notify(0, "STOPPING=1");
  if (listening_) {
    listening_ = false;
    uv_close(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
    // Remove the socket only if it is still ours (not replaced by someone else).
    struct stat st;
    if (lstat(cfg_.socket.c_str(), &st) == 0 && st.st_dev == socket_dev_ && st.st_ino == socket_ino_)
      unlink(cfg_.socket.c_str());
  }
  engine_->begin_shutdown();  // finishes clears, answers lease waiters and Redis waits
  resume_sessions();          // requests queued behind a Redis wait: SHUTTING_DOWN
  uv_idle_stop(&idle_);
  uv_timer_stop(&expire_);
  uv_timer_stop(&deadline_);
  uv_timer_stop(&hits_);
  for (uv_handle_t* h : {reinterpret_cast<uv_handle_t*>(&sig_term_), reinterpret_cast<uv_handle_t*>(&sig_int_),
                         reinterpret_cast<uv_handle_t*>(&sig_hup_), reinterpret_cast<uv_handle_t*>(&expire_),
                         reinterpret_cast<uv_handle_t*>(&deadline_), reinterpret_cast<uv_handle_t*>(&idle_)})
    uv_unref(h);
  // Every connection is closed once the replies already produced are written.
  std::vector<Conn*> all;
  for (auto& [id, c] : conns_) all.push_back(c);
  for (Conn* c : all) {
    uv_read_stop(reinterpret_cast<uv_stream_t*>(&c->pipe));
    c->s.closing = true;
    if (c->s.close_reason.empty()) c->s.close_reason = "daemon stopping";
    flush(c);
  }
  flush_dirty();
  uv_timer_start(&stop_timer_, on_stop_timeout, stop_grace_ms_, 0);
  if (on_shutdown) on_shutdown();
  maybe_finish_shutdown();
}

void Server::on_stop_timeout(uv_timer_t* t) {
  auto* self = static_cast<Server*>(t->data);
  spdlog::warn("{} connection(s) did not read their last replies in time; closing them", self->conns_.size());
  std::vector<Conn*> all;
  for (auto& [id, c] : self->conns_) all.push_back(c);
  for (Conn* c : all) self->close_conn(c, "shutdown timeout");
  self->flush_dirty();
}

void Server::maybe_finish_shutdown() {
  if (!stopping_ || !conns_.empty()) return;
  // Nothing left to serve: close the remaining handles so uv_run returns. The
  // heartbeat keeps beating (unreferenced) while the Redis drain still runs,
  // which can outlast heartbeat_grace_ms: readers must not stop meanwhile.
  uv_unref(reinterpret_cast<uv_handle_t*>(&heartbeat_));
  for (uv_handle_t* h : {reinterpret_cast<uv_handle_t*>(&expire_),
                         reinterpret_cast<uv_handle_t*>(&deadline_), reinterpret_cast<uv_handle_t*>(&stop_timer_),
                         reinterpret_cast<uv_handle_t*>(&idle_), reinterpret_cast<uv_handle_t*>(&check_)})
    if (!uv_is_closing(h)) uv_close(h, nullptr);
  if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(&hits_))) uv_close(reinterpret_cast<uv_handle_t*>(&hits_), nullptr);
}

void Server::reload() {
  Config next;
  std::string err;
  if (!load_config(flags_, &next, &err)) {
    spdlog::error("SIGHUP: configuration not reloaded: {}", err);
    return;
  }
  Config applied = cfg_;
  int changed = 0, ignored = 0;
  for (const auto& o : option_table()) {
    const std::string before = format_option(cfg_, o), after = format_option(next, o);
    if (before == after) continue;
    if (!o.reloadable) {
      spdlog::warn("SIGHUP: {} changed ({} -> {}) but needs a restart; keeping {}", o.name, before, after, before);
      ignored++;
      continue;
    }
    copy_option(o, next, &applied);
    spdlog::info("SIGHUP: {} = {} (was {})", o.name, after, before);
    changed++;
  }
  const bool beat = applied.heartbeat_interval_ms != cfg_.heartbeat_interval_ms;
  cfg_ = applied;
  engine_->configure(cfg_);
  set_log_level(cfg_.log_level);
  resolve_allow_lists(cfg_);
  if (beat) uv_timer_start(&heartbeat_, on_heartbeat, cfg_.heartbeat_interval_ms, cfg_.heartbeat_interval_ms);
  spdlog::info("SIGHUP: configuration reloaded ({} option(s) changed, {} need a restart)", changed, ignored);
  if (on_reload) on_reload(cfg_);
}

}  // namespace nearcache::daemon
