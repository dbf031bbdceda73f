// daemon/cli/top_view.h — `nearcache top`: the live view an operator leaves
// open during an incident, as `redis-cli --stat` and `htop` are. One STATUS a
// refresh (so hit_ratio_1m is exactly the last minute while it runs); rates
// are the differences between two STATUS replies over the time between them.
//
// On a terminal: the alternate screen, redrawn in place every interval (ANSI),
// `q` or Ctrl-C quits and the terminal is restored as it was (termios, cursor,
// screen). Not a terminal: one plain line per interval, under a header
// repeated every 20 lines, for logs and scripts. The daemon going away is
// shown, not fatal: top reconnects every interval.
#pragma once

#include <string>

namespace nearcache::daemon {

struct TopOptions {
  std::string socket;
  int timeout_ms = 5000;
  double interval_s = 1.0;
  long count = 0;  // refreshes before exiting; 0 = until q or Ctrl-C
};

// Runs until q, Ctrl-C (SIGINT), SIGTERM, SIGHUP or `count` refreshes.
// Returns the exit status: 0, or 3 when `count` ran out without ever
// reaching the daemon.
int run_top(const TopOptions& opts);

}  // namespace nearcache::daemon
