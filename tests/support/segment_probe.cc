// tests/support/segment_probe.cc — a real shared-memory reader for the daemon's
// end-to-end tests (the Python client is tested on its own). It keeps one
// mapping open and answers commands from stdin, one line each:
//   open PATH    map the segment            -> "open rc=0 generation=G pid=P grace_ms=M" (or rc=errno why=...)
//   check        the current mapping's state -> "check alive=1 generation=G"
//   get KEY      look KEY up                 -> "get status=hit value_len=N" (status: hit/miss/busy/
//                                               unavailable/negative/suspended)
//   attach       create this process's hit region and record into it -> "attach fd=N pid=P"
//                (a test registers it with HITS through /proc/P/fd/N)
//   counts       the region's counters       -> "counts hits=H misses=M busy=B"
//   flags        the header's flags          -> "flags authoritative=A suspended=S"
// so a test can hold a mapping across a daemon restart or kill -9.
#include <unistd.h>

#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "hits.h"
#include "layout.h"
#include "reader.h"

using nearcache::shm::HitRegion;
using nearcache::shm::Reader;

int main() {
  Reader r;
  std::unique_ptr<HitRegion> hits;
  std::string line;
  std::vector<char> buf(4 << 20);
  while (std::getline(std::cin, line)) {
    const auto sp = line.find(' ');
    const std::string cmd = line.substr(0, sp), arg = sp == std::string::npos ? "" : line.substr(sp + 1);
    if (cmd == "open") {
      r.close();
      std::string why;
      const int rc = r.open(arg, &why);
      if (rc == 0) r.attach_hits(hits.get());
      if (rc == 0)
        std::cout << "open rc=0 generation=" << r.generation() << " pid=" << r.writer_pid()
                  << " grace_ms=" << r.heartbeat_grace_ms() << std::endl;
      else
        std::cout << "open rc=" << rc << " why=" << why << std::endl;
    } else if (cmd == "check") {
      std::cout << "check alive=" << (r.is_open() && r.alive(nearcache::shm::monotonic_ms()))
                << " generation=" << r.generation() << std::endl;
    } else if (cmd == "get") {
      const auto res = r.get(arg.data(), arg.size(), buf.data(), buf.size());
      std::cout << "get status=" << nearcache::shm::read_status_name(res.status) << " value_len=" << res.value_len
                << std::endl;
    } else if (cmd == "attach") {
      std::string why;
      if (!hits) hits = HitRegion::create(&why);
      if (!hits) {
        std::cout << "attach fd=-1 why=" << why << std::endl;
        continue;
      }
      r.attach_hits(hits.get());
      std::cout << "attach fd=" << hits->fd() << " pid=" << getpid() << std::endl;
    } else if (cmd == "counts") {
      std::cout << "counts hits=" << (hits ? hits->hits() : 0) << " misses=" << (hits ? hits->misses() : 0)
                << " busy=" << (hits ? hits->busy_count() : 0) << std::endl;
    } else if (cmd == "flags") {
      std::cout << "flags authoritative=" << r.authoritative() << " suspended=" << r.suspended() << std::endl;
    } else {
      std::cout << "error unknown command" << std::endl;
    }
  }
  return 0;
}
