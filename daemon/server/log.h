// daemon/server/log.h — spdlog set-up for nearcached: stderr, with timestamps on a
// terminal or in a file, and syslog priority prefixes instead of timestamps
// when JOURNAL_STREAM says journald reads stderr (it adds its own).
#pragma once

#include <string>

namespace nearcache::daemon {

void setup_logging(const std::string& level);
// Returns false when `level` is not a level name.
bool set_log_level(const std::string& level);

}  // namespace nearcache::daemon
