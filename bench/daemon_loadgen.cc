// bench/daemon_loadgen.cc — the load generator of bench/daemon_vs_redis_memcached.py.
//
// Sends one pre-encoded request (read from a file, in whatever protocol the
// server speaks) over a Unix socket and reads each reply by its known length,
// so that what is measured is the server and the kernel, not a client library.
//
//   bench_daemon_loadgen rt   SOCKET REQUEST_FILE REPLY_BYTES COUNT
//       COUNT round trips one at a time; prints "median_us p99_us"
//   bench_daemon_loadgen pipe SOCKET REQUEST_FILE REPLY_BYTES BATCH SECONDS
//       batches of BATCH requests, each batch's replies read before the next;
//       prints "requests_per_second"
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

int connect_to(const char* path) {
  const int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::strncpy(sa.sun_path, path, sizeof sa.sun_path - 1);
  if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    perror("connect");
    exit(1);
  }
  return fd;
}

void send_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    const ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w <= 0) {
      perror("send");
      exit(1);
    }
    p += w;
    n -= size_t(w);
  }
}

void recv_exact(int fd, char* buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    const ssize_t r = recv(fd, buf + got, n - got, 0);
    if (r <= 0) {
      fprintf(stderr, "recv: %s\n", r == 0 ? "connection closed" : strerror(errno));
      exit(1);
    }
    got += size_t(r);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 6) {
    fprintf(stderr, "usage: %s rt|pipe SOCKET REQUEST_FILE REPLY_BYTES COUNT|BATCH [SECONDS]\n", argv[0]);
    return 2;
  }
  const std::string mode = argv[1];
  std::ifstream f(argv[3], std::ios::binary);
  const std::string req((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const size_t reply = std::strtoull(argv[4], nullptr, 10);
  const int fd = connect_to(argv[2]);
  if (mode == "rt") {
    const size_t count = std::strtoull(argv[5], nullptr, 10);
    std::vector<char> buf(reply);
    std::vector<double> us;
    us.reserve(count);
    for (size_t i = 0; i < count / 10 + count; ++i) {
      const auto t0 = Clock::now();
      send_all(fd, req.data(), req.size());
      recv_exact(fd, buf.data(), reply);
      if (i >= count / 10) us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
    }
    std::sort(us.begin(), us.end());
    printf("%.2f %.2f\n", us[us.size() / 2], us[std::min(us.size() - 1, us.size() * 99 / 100)]);
  } else if (mode == "pipe" && argc >= 7) {
    const size_t batch = std::strtoull(argv[5], nullptr, 10);
    const double seconds = std::atof(argv[6]);
    std::string all;
    for (size_t i = 0; i < batch; ++i) all += req;
    std::vector<char> buf(reply * batch);
    size_t done = 0;
    const auto t0 = Clock::now();
    const auto end = t0 + std::chrono::duration<double>(seconds);
    while (Clock::now() < end) {
      send_all(fd, all.data(), all.size());
      recv_exact(fd, buf.data(), buf.size());
      done += batch;
    }
    printf("%.0f\n", double(done) / std::chrono::duration<double>(Clock::now() - t0).count());
  } else {
    fprintf(stderr, "unknown mode %s\n", mode.c_str());
    return 2;
  }
  close(fd);
  return 0;
}
