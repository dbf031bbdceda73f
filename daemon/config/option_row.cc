// daemon/config/option_row.cc — parsing, formatting and bounds of one row's value. See option_row.h.
#include "config/option_row.h"

#include <cstdio>
#include <set>

namespace nearcache::daemon {

namespace {

bool fail(const OptionSpec& o, const std::string& raw, const char* what, std::string* err) {
  *err = std::string("option ") + o.name + ": " + what + ", got \"" + raw + "\"";
  return false;
}

bool parse_mode(const std::string& s, unsigned* out) {
  if (s.empty() || s.size() > 4) return false;
  unsigned v = 0;
  for (char c : s) {
    if (c < '0' || c > '7') return false;
    v = v * 8 + unsigned(c - '0');
  }
  *out = v;
  return true;
}

}  // namespace

const char* opt_type_name(OptType t) {
  switch (t) {
    case OptType::string: return "string";
    case OptType::path: return "path";
    case OptType::boolean: return "bool";
    case OptType::size: return "size";
    case OptType::count: return "integer";
    case OptType::mode: return "mode";
    case OptType::list: return "list";
    case OptType::secret: return "url";
  }
  return "?";
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t") - b + 1);
}

bool parse_count(const std::string& s, uint64_t* out) {
  if (s.empty() || s.size() > 20) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    const uint64_t d = uint64_t(c - '0');
    if (v > (UINT64_MAX - d) / 10) return false;
    v = v * 10 + d;
  }
  *out = v;
  return true;
}

bool parse_size(const std::string& in, uint64_t* out) {
  std::string s = trim(in);
  if (s.empty()) return false;
  uint64_t mult = 1;
  switch (s.back()) {
    case 'k': case 'K': mult = 1ull << 10; break;
    case 'm': case 'M': mult = 1ull << 20; break;
    case 'g': case 'G': mult = 1ull << 30; break;
    default: break;
  }
  if (mult != 1) s.pop_back();
  uint64_t v;
  if (!parse_count(s, &v) || (v != 0 && mult > UINT64_MAX / v)) return false;
  *out = v * mult;
  return true;
}

bool parse_value(const OptionSpec& o, const std::string& raw, std::string* out, std::string*) {
  // Paths, strings and secrets are taken as written; a list's items are trimmed where it is used.
  *out = o.type == OptType::list ? trim(raw) : raw;
  return true;
}

bool parse_value(const OptionSpec& o, const std::string& raw, bool* out, std::string* err) {
  static const std::set<std::string> yes = {"1", "true", "yes", "on"}, no = {"0", "false", "no", "off"};
  const std::string v = trim(raw);
  if (yes.count(v)) return *out = true, true;
  if (no.count(v)) return *out = false, true;
  return fail(o, raw, "expected true or false", err);
}

bool parse_value(const OptionSpec& o, const std::string& raw, unsigned* out, std::string* err) {
  if (!parse_mode(trim(raw), out)) return fail(o, raw, "expected an octal mode like 0660", err);
  return true;
}

bool parse_value(const OptionSpec& o, const std::string& raw, uint64_t* out, std::string* err) {
  const std::string v = trim(raw);
  if (o.type == OptType::size) {
    if (v.empty() && o.def[0] == '\0') return *out = 0, true;  // automatic
    if (!parse_size(v, out)) return fail(o, raw, "expected a size in bytes with an optional K, M or G suffix", err);
    return true;
  }
  if (!parse_count(v, out)) return fail(o, raw, "expected a non-negative integer", err);
  return true;
}

std::string format_value(const OptionSpec& o, const std::string& v) {
  if (o.type != OptType::secret) return v;
  // Credentials in a URL (redis://user:password@host) are masked.
  const auto scheme = v.find("://"), at = v.rfind('@');
  if (scheme != std::string::npos && at != std::string::npos && at > scheme)
    return v.substr(0, scheme + 3) + "***" + v.substr(at);
  return v;
}

std::string format_value(const OptionSpec&, bool v) { return v ? "true" : "false"; }

std::string format_value(const OptionSpec&, unsigned v) {
  char buf[8];
  snprintf(buf, sizeof buf, "%04o", v);
  return buf;
}

std::string format_value(const OptionSpec& o, uint64_t v) {
  if (o.type == OptType::size && v != 0) {
    if (v % (1ull << 30) == 0) return std::to_string(v >> 30) + "G";
    if (v % (1ull << 20) == 0) return std::to_string(v >> 20) + "M";
    if (v % (1ull << 10) == 0) return std::to_string(v >> 10) + "K";
  }
  return std::to_string(v);
}

bool check_bounds(const OptionSpec& o, uint64_t v, std::string* err) {
  if (v >= o.min && v <= o.max) return true;
  *err = std::string("option ") + o.name + ": must be " +
         (o.max == kNoMax ? "at least " + format_value(o, o.min)
                          : "between " + format_value(o, o.min) + " and " + format_value(o, o.max)) +
         " (got " + format_value(o, v) + ")";
  return false;
}

}  // namespace nearcache::daemon
