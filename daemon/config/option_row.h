// daemon/config/option_row.h — the shape of one option: its row, and how a row
// reads, writes and checks its field.
//
// As redis's config.c: a row carries the option's name, type, default (as
// written in a config file), bounds, whether SIGHUP applies it, its help and a
// pointer to its field. The daemon's rows (config/options.cc) point into
// daemon::Config, the Redis tier's (redis/config.cc) into redis::Config,
// which daemon::Config holds as `redis`. Everything else (defaults, parsing,
// bounds, reload, STATUS, --help, the docs) is derived from the rows.
#pragma once

#include <cstdint>
#include <string>
#include <type_traits>
#include <variant>

namespace nearcache::redis {
struct Config;
enum class DownPolicy : uint8_t;
}  // namespace nearcache::redis

namespace nearcache::daemon {

struct Config;

enum class OptType { string, path, boolean, size, count, mode, list, secret };

// Where a row's value lives.
using Field = std::variant<std::string Config::*, bool Config::*, unsigned Config::*, uint64_t Config::*,
                           std::string redis::Config::*, bool redis::Config::*, uint64_t redis::Config::*,
                           redis::DownPolicy redis::Config::*>;

struct OptionSpec {
  const char* name;
  OptType type;
  const char* def;  // as written in a config file; "" = empty / automatic
  uint64_t min, max;  // bounds of a size or count, inclusive (0, kNoMax: any); 0, 0 for other types
  bool reloadable;    // SIGHUP applies it
  const char* help;
  Field field;
};
constexpr uint64_t kNoMax = UINT64_MAX;

const char* opt_type_name(OptType t);

// Parses "64M", "1G", "4096", "512K" (binary units); false on junk or overflow.
bool parse_size(const std::string& s, uint64_t* out);
// A decimal non-negative integer; false on junk or overflow.
bool parse_count(const std::string& s, uint64_t* out);
std::string trim(const std::string& s);

// Text of a config file into a field of the row's type; false with *err
// ("option NAME: expected ..., got "raw"").
bool parse_value(const OptionSpec& o, const std::string& raw, std::string* out, std::string* err);
bool parse_value(const OptionSpec& o, const std::string& raw, bool* out, std::string* err);
bool parse_value(const OptionSpec& o, const std::string& raw, unsigned* out, std::string* err);
bool parse_value(const OptionSpec& o, const std::string& raw, uint64_t* out, std::string* err);
// A field's value as a config file takes it (credentials in a URL masked).
std::string format_value(const OptionSpec& o, const std::string& v);
std::string format_value(const OptionSpec& o, bool v);
std::string format_value(const OptionSpec& o, unsigned v);
std::string format_value(const OptionSpec& o, uint64_t v);
// The row's min/max ("option NAME: must be between MIN and MAX (got V)");
// values other than numbers have no bounds.
bool check_bounds(const OptionSpec& o, uint64_t v, std::string* err);
template <class T>
bool check_bounds(const OptionSpec&, const T&, std::string*) {
  return true;
}

namespace detail {
template <class>
struct member_of;
template <class T, class C>
struct member_of<T C::*> {
  using type = C;
};
}  // namespace detail

// Calls fn(value&) with the row's field inside `s`: a daemon::Config (its own
// fields and those of its `redis` member) or a redis::Config (the tier's rows
// only; a daemon row is skipped). Returns false when the row is not in `s`.
template <class S, class F>
bool visit_field(S& s, const Field& field, F&& fn) {
  return std::visit(
      [&](auto m) {
        using Owner = typename detail::member_of<decltype(m)>::type;
        if constexpr (std::is_same_v<Owner, std::remove_const_t<S>>) {
          fn(s.*m);
          return true;
        } else if constexpr (requires { s.redis; }) {
          fn(s.redis.*m);
          return true;
        } else {
          return false;
        }
      },
      field);
}

// The row's value in `s` parsed from `raw` / formatted / checked against its bounds.
template <class S>
bool assign_option(S* s, const OptionSpec& o, const std::string& raw, std::string* err) {
  bool ok = true;
  visit_field(*s, o.field, [&](auto& v) { ok = parse_value(o, raw, &v, err); });
  return ok;
}
template <class S>
std::string format_option(const S& s, const OptionSpec& o) {
  std::string out;
  visit_field(s, o.field, [&](const auto& v) { out = format_value(o, v); });
  return out;
}
template <class S>
bool check_option_bounds(const S& s, const OptionSpec& o, std::string* err) {
  bool ok = true;
  visit_field(s, o.field, [&](const auto& v) { ok = check_bounds(o, v, err); });
  return ok;
}

}  // namespace nearcache::daemon
