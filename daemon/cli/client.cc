// daemon/cli/client.cc — see client.h.
#include "cli/client.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

namespace nearcache::daemon {

namespace {
int64_t now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count();
}
}  // namespace

BlockingClient::~BlockingClient() {
  if (fd_ >= 0) close(fd_);
}

bool BlockingClient::connect(const std::string& path, int timeout_ms, std::string* err) {
  timeout_ms_ = timeout_ms;
  sockaddr_un sa{};
  if (path.size() >= sizeof sa.sun_path) {
    *err = "socket path too long: " + path;
    return false;
  }
  sa.sun_family = AF_UNIX;
  std::memcpy(sa.sun_path, path.c_str(), path.size());
  fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0 || ::connect(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    *err = "cannot connect to " + path + ": " + std::strerror(errno) +
           (errno == ENOENT || errno == ECONNREFUSED ? " (is nearcached running?)" : "");
    return false;
  }
  return true;
}

bool BlockingClient::roundtrip(const char* data, size_t len, uint64_t id, msgpack::object_handle* reply,
                               std::string* err) {
  const int64_t deadline = now_ms() + timeout_ms_;
  size_t sent = 0;
  while (sent < len) {
    const ssize_t n = send(fd_, data + sent, len - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      *err = std::string("send: ") + std::strerror(errno);
      return false;
    }
    sent += size_t(n);
  }
  for (;;) {
    while (unpacker_.next(*reply)) {
      const msgpack::object& o = reply->get();
      if (o.type == msgpack::type::ARRAY && o.via.array.size >= 2) {
        const msgpack::object& rid = o.via.array.ptr[0];
        if (rid.type == msgpack::type::NIL || (rid.type == msgpack::type::POSITIVE_INTEGER && rid.via.u64 == id))
          return true;
      }
    }
    const int64_t left = deadline - now_ms();
    if (left <= 0) {
      *err = "no reply within " + std::to_string(timeout_ms_) + " ms";
      return false;
    }
    pollfd p{fd_, POLLIN, 0};
    const int r = poll(&p, 1, int(left));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) continue;
    unpacker_.reserve_buffer(64 << 10);
    const ssize_t n = recv(fd_, unpacker_.buffer(), unpacker_.buffer_capacity(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      *err = std::string("recv: ") + std::strerror(errno);
      return false;
    }
    if (n == 0) {
      *err = "the daemon closed the connection";
      return false;
    }
    unpacker_.buffer_consumed(size_t(n));
  }
}

}  // namespace nearcache::daemon
