// daemon/server/server.h — the libuv side of nearcached: the listening Unix socket,
// connections (credentials, allow-list, reading, writing, output limits),
// descriptors a peer sends (HITS), the timers (heartbeat and loop lag,
// expiry sweep, hit regions, lease deadlines), the
// sliced CLEAR work, signals (SIGTERM/SIGINT stop, SIGHUP reload) and
// systemd notification. Everything runs on one loop thread.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "config/options.h"

namespace nearcache::daemon {

struct Conn;

// An existing file at `path`: refuses (false, *err) when a daemon answers on
// it or it is not a socket; removes it when it is a stale socket.
bool check_socket(const std::string& path, std::string* err);

class Server {
 public:
  // `flags` are the command-line options, kept for SIGHUP reloads.
  Server(uv_loop_t* loop, Engine* engine, const Config& cfg, std::map<std::string, std::string> flags);
  ~Server();

  // Refuses when another daemon answers on the socket; replaces a stale one.
  // Binds, sets mode and group, listens, starts timers and signal handlers.
  bool start(std::string* err);
  // Runs the loop until shutdown completes.
  void run();
  // SIGTERM/SIGINT: stop accepting, finish in-flight work, close connections.
  void shutdown(const char* why);
  // SIGHUP: re-read the configuration and apply what can change at run time.
  void reload();

  // For the engine's hooks.
  void mark_dirty(Conn* c);
  void flush_dirty();

  bool print_banner = false;
  // Called once SIGTERM/SIGINT began the shutdown (the Redis tier drains its
  // queue meanwhile; the loop runs until every handle is closed).
  std::function<void()> on_shutdown;
  // Called after a SIGHUP reload with the configuration now in effect.
  std::function<void(const Config&)> on_reload;
  // Connections still open this long after SIGTERM are cut (at least 5 s).
  void set_stop_grace_ms(uint64_t ms);

 private:
  static void on_connection(uv_stream_t* server, int status);
  static void on_alloc(uv_handle_t* h, size_t suggested, uv_buf_t* buf);
  static void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf);
  static void on_write(uv_write_t* req, int status);
  static void on_close(uv_handle_t* h);
  static void on_heartbeat(uv_timer_t* t);
  static void on_expire(uv_timer_t* t);
  static void on_hits(uv_timer_t* t);  // reads hit regions (Engine::poll_hits)
  static void on_deadline(uv_timer_t* t);
  static void on_idle(uv_idle_t* h);
  static void on_signal(uv_signal_t* h, int signum);
  static void on_stop_timeout(uv_timer_t* t);
  static void on_check(uv_check_t* h);

  void accept_one();
  void take_fds(Conn* c);  // descriptors the peer sent (SCM_RIGHTS): see Conn::fd
  bool allowed(uint32_t uid, uint32_t gid, std::string* why) const;
  void resolve_allow_lists(const Config& cfg);
  void flush(Conn* c);
  // Flow control (see Conn::paused): execute within the bounds, read on or not.
  void serve(Conn* c);
  void update_reading(Conn* c);
  void schedule(Conn* c);  // serve it again next loop turn
  void check_stalled();    // slow_reader_timeout_ms
  size_t pending(const Conn* c) const;  // its replies not yet taken by the kernel
  bool output_full(const Conn* c) const;
  void count_pending(Conn* c);
  void close_conn(Conn* c, const std::string& reason);
  void arm_deadline();
  void maybe_finish_shutdown();
  void resume_sessions();

  uv_loop_t* loop_;
  Engine* engine_;
  Config cfg_;
  std::map<std::string, std::string> flags_;
  uv_pipe_t listener_;
  bool listening_ = false;
  uv_timer_t heartbeat_, expire_, deadline_, stop_timer_, hits_;
  uv_idle_t idle_;
  uv_check_t check_;  // flushes replies that Redis callbacks produced this loop turn
  uv_signal_t sig_term_{}, sig_int_{}, sig_hup_{};
  std::vector<Conn*> dirty_;
  std::vector<uint64_t> resume_;  // connections whose blocking request completed (Session::blocked)
  std::vector<uint64_t> again_;   // connections to serve next loop turn (Server::schedule)
  size_t pending_total_ = 0;      // every connection's pending() (as last counted), for max_output_bytes_total
  std::map<uint64_t, Conn*> conns_;
  uint64_t next_conn_id_ = 1;
  uint64_t armed_deadline_ = UINT64_MAX;
  uint64_t last_beat_ns_ = 0;
  std::vector<uint32_t> allow_uids_, allow_gids_;
  bool allow_list_ = false;
  bool stopping_ = false;
  uint64_t stop_grace_ms_ = 5000;
  dev_t socket_dev_ = 0;
  ino_t socket_ino_ = 0;
};

}  // namespace nearcache::daemon
