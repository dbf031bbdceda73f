// daemon/server/log.cc — see log.h.
#include "server/log.h"

#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace nearcache::daemon {

namespace {

// "<N>" syslog priority, which journald strips and turns into the entry's priority.
class SyslogPriority final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
    static const char* const prio[] = {"<7>", "<7>", "<6>", "<4>", "<3>", "<2>", "<6>"};
    const char* p = prio[std::min<int>(int(msg.level), 6)];
    dest.append(p, p + 3);
  }
  std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<SyslogPriority>(); }
};

}  // namespace

void setup_logging(const std::string& level) {
  std::shared_ptr<spdlog::logger> logger;
  const bool journal = getenv("JOURNAL_STREAM") != nullptr;
  if (!journal && isatty(STDERR_FILENO)) logger = spdlog::stderr_color_st("nearcached");
  else logger = spdlog::stderr_logger_st("nearcached");
  auto f = std::make_unique<spdlog::pattern_formatter>();
  if (journal) f->add_flag<SyslogPriority>('*').set_pattern("%*%v");
  else f->set_pattern("%Y-%m-%d %H:%M:%S.%e [%^%l%$] %v");
  logger->set_formatter(std::move(f));
  logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(logger);
  set_log_level(level);
}

bool set_log_level(const std::string& level) {
  const auto l = spdlog::level::from_str(level);
  if (l == spdlog::level::off && level != "off") return false;
  spdlog::set_level(l);
  return true;
}

}  // namespace nearcache::daemon
