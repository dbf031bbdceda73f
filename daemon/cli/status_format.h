// daemon/cli/status_format.h — renders a STATUS reply's map for people (text),
// scripts (JSON, values as cli/value_json.h renders them) and Prometheus
// (text exposition format), driven by the metric table in metrics.h. Used by
// the `nearcache` CLI.
#pragma once

#include <msgpack.hpp>
#include <string>

namespace nearcache::daemon {

std::string status_text(const msgpack::object& status);
std::string status_json(const msgpack::object& status);
std::string status_prometheus(const msgpack::object& status);
// What --prometheus prints when the daemon cannot be reached.
std::string prometheus_down();

// Pieces the other commands (memory, hotkeys, top) render with.
const msgpack::object* status_field(const msgpack::object& map, std::string_view key);
double status_number(const msgpack::object* o);  // NaN when absent or not a number
std::string human_bytes(double v);                // "3.1 MiB"
// The key_stats prefix table ("traffic by key prefix"), "" when STATUS has none.
std::string prefix_traffic_text(const msgpack::object& status, const char* indent);

}  // namespace nearcache::daemon
