// daemon/cli/value_json.cc — see value_json.h.
#include "cli/value_json.h"

#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <string>

#include "cli/compressed.h"
#include "cli/msgpack_bytes.h"

namespace nearcache::daemon {

namespace {

using json = nlohmann::ordered_json;

// The client's extension codes (client-py/native/state.h, ExtCode).
enum : int8_t {
  kTuple = 1, kSet = 2, kFrozenset = 3, kDatetime = 4, kDate = 5, kTime = 6,
  kTimedelta = 7, kDecimal = 8, kUuid = 9, kBigint = 10, kPickle = 64,
};
constexpr uint64_t kFlagSerialized = 0x01;  // client-py/native/state.h

std::string base64(std::string_view b) {
  static const char* d = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string s;
  s.reserve((b.size() + 2) / 3 * 4);
  for (size_t i = 0; i < b.size(); i += 3) {
    const size_t n = std::min<size_t>(3, b.size() - i);
    uint32_t v = uint32_t(uint8_t(b[i])) << 16;
    if (n > 1) v |= uint32_t(uint8_t(b[i + 1])) << 8;
    if (n > 2) v |= uint8_t(b[i + 2]);
    s += d[v >> 18 & 63];
    s += d[v >> 12 & 63];
    s += n > 1 ? d[v >> 6 & 63] : '=';
    s += n > 2 ? d[v & 63] : '=';
  }
  return s;
}

bool valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const uint8_t c = uint8_t(s[i]);
    const size_t n = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : 4;
    if (n == 4 || (n && i + n >= s.size())) return false;  // a bad lead byte, or cut short
    uint32_t cp = n ? c & (0x3f >> n) : c;
    for (size_t k = 1; k <= n; ++k) {
      const uint8_t cc = uint8_t(s[i + k]);
      if ((cc >> 6) != 2) return false;
      cp = cp << 6 | (cc & 0x3f);
    }
    // Overlong forms, surrogates and code points past U+10FFFF are not UTF-8.
    if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff))
      return false;
    i += n + 1;
  }
  return true;
}

json tagged(const char* tag, json v) {
  json j = json::object();
  j[tag] = std::move(v);
  return j;
}

json bytes_json(std::string_view b) { return tagged("$bytes", base64(b)); }

json with_size(const char* tag, std::string_view b) {
  json j = tagged(tag, base64(b));
  j["bytes"] = b.size();
  return j;
}

bool is_int(const msgpack::object& o) {
  return o.type == msgpack::type::POSITIVE_INTEGER || o.type == msgpack::type::NEGATIVE_INTEGER;
}
int64_t int_of(const msgpack::object& o) {
  return o.type == msgpack::type::POSITIVE_INTEGER ? int64_t(o.via.u64) : o.via.i64;
}

// An array of `n` leading integers (then anything), as the datetime family's payloads are.
bool int_fields(const msgpack::object& a, uint32_t n) {
  if (a.type != msgpack::type::ARRAY || a.via.array.size < n) return false;
  for (uint32_t i = 0; i < n; ++i)
    if (!is_int(a.via.array.ptr[i])) return false;
  return true;
}

// Python's utcoffset text in isoformat: +HH:MM[:SS[.ffffff]].
std::string offset_text(int64_t us) {
  const char sign = us < 0 ? '-' : '+';
  uint64_t a = uint64_t(us < 0 ? -us : us);
  const uint64_t h = a / 3600000000, m = a / 60000000 % 60, s = a / 1000000 % 60, f = a % 1000000;
  char buf[32];
  if (f) snprintf(buf, sizeof buf, "%c%02" PRIu64 ":%02" PRIu64 ":%02" PRIu64 ".%06" PRIu64, sign, h, m, s, f);
  else if (s) snprintf(buf, sizeof buf, "%c%02" PRIu64 ":%02" PRIu64 ":%02" PRIu64, sign, h, m, s);
  else snprintf(buf, sizeof buf, "%c%02" PRIu64 ":%02" PRIu64, sign, h, m);
  return buf;
}

// HH:MM:SS[.ffffff], as Python's isoformat.
std::string clock_text(int64_t h, int64_t m, int64_t s, int64_t us) {
  char buf[48];
  if (us) snprintf(buf, sizeof buf, "%02" PRId64 ":%02" PRId64 ":%02" PRId64 ".%06" PRId64, h, m, s, us);
  else snprintf(buf, sizeof buf, "%02" PRId64 ":%02" PRId64 ":%02" PRId64, h, m, s);
  return buf;
}

// Adds the tz (nil | offset_us | [offset_us, name] | IANA key) to `text` and
// `j`: an offset as isoformat prints it; a name or an IANA key as "tz" (the
// wall time of an IANA zone is shown without an offset: no tz database here).
bool add_tz(const msgpack::object& tz, std::string* text, json* extra) {
  if (tz.type == msgpack::type::NIL) return true;
  if (is_int(tz)) {
    *text += offset_text(int_of(tz));
    return true;
  }
  if (tz.type == msgpack::type::ARRAY && tz.via.array.size == 2 && is_int(tz.via.array.ptr[0]) &&
      tz.via.array.ptr[1].type == msgpack::type::STR) {
    *text += offset_text(int_of(tz.via.array.ptr[0]));
    (*extra)["tz"] = std::string(str_of(tz.via.array.ptr[1]));
    return true;
  }
  if (tz.type == msgpack::type::STR) {
    (*extra)["tz"] = std::string(str_of(tz));
    return true;
  }
  return false;
}

// Python's str(timedelta): "[-]D day[s], H:MM:SS[.ffffff]".
std::string timedelta_text(int64_t days, int64_t secs, int64_t us) {
  std::string s;
  if (days) s = std::to_string(days) + (days == 1 || days == -1 ? " day, " : " days, ");
  char buf[48];
  snprintf(buf, sizeof buf, "%" PRId64 ":%02" PRId64 ":%02" PRId64, secs / 3600, secs / 60 % 60, secs % 60);
  s += buf;
  if (us) snprintf(buf, sizeof buf, ".%06" PRId64, us), s += buf;
  return s;
}

std::string uuid_text(std::string_view b) {
  std::string s;
  static const char* hex = "0123456789abcdef";
  for (size_t i = 0; i < b.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) s += '-';
    s += hex[uint8_t(b[i]) >> 4];
    s += hex[uint8_t(b[i]) & 15];
  }
  return s;
}

json ext_json(const msgpack::object& o) {
  const int8_t code = o.via.ext.type();
  const std::string_view data(o.via.ext.data(), o.via.ext.size);
  auto unknown = [&] {
    json j = tagged("$ext", code);
    j["data"] = base64(data);
    return j;
  };
  if (code == kPickle) return with_size("$pickle", data);
  if (code == kDecimal || code == kBigint) return tagged(code == kDecimal ? "$decimal" : "$bigint", std::string(data));
  if (code == kUuid) return data.size() == 16 ? tagged("$uuid", uuid_text(data)) : unknown();
  if (code < kTuple || code > kTimedelta) return unknown();
  // The rest carry one msgpack object.
  msgpack::object_handle h;
  try {
    size_t off = 0;
    h = msgpack::unpack(data.data(), data.size(), off);
    if (off != data.size()) return unknown();
  } catch (const std::exception&) {
    return unknown();
  }
  const msgpack::object& p = h.get();
  const msgpack::object* f = p.type == msgpack::type::ARRAY ? p.via.array.ptr : nullptr;
  char buf[64];
  switch (code) {
    case kTuple:
    case kSet:
    case kFrozenset:
      if (p.type != msgpack::type::ARRAY) return unknown();
      return tagged(code == kTuple ? "$tuple" : code == kSet ? "$set" : "$frozenset", value_json(p));
    case kDate:
      if (!int_fields(p, 3)) return unknown();
      snprintf(buf, sizeof buf, "%04" PRId64 "-%02" PRId64 "-%02" PRId64, int_of(f[0]), int_of(f[1]), int_of(f[2]));
      return tagged("$date", std::string(buf));
    case kDatetime:
    case kTime: {
      const bool dt = code == kDatetime;
      const uint32_t n = dt ? 8 : 5;  // integer fields before tz
      if (!int_fields(p, n) || p.via.array.size != n + 1) return unknown();
      const auto* c = dt ? f + 3 : f;  // hour, minute, second, microsecond, fold
      std::string text;
      if (dt) {
        snprintf(buf, sizeof buf, "%04" PRId64 "-%02" PRId64 "-%02" PRId64 "T", int_of(f[0]), int_of(f[1]), int_of(f[2]));
        text = buf;
      }
      text += clock_text(int_of(c[0]), int_of(c[1]), int_of(c[2]), int_of(c[3]));
      json extra = json::object();
      if (!add_tz(f[n], &text, &extra)) return unknown();
      json j = tagged(dt ? "$datetime" : "$time", text);
      if (int_of(c[4])) j["fold"] = int_of(c[4]);
      for (auto& [k, v] : extra.items()) j[k] = v;
      return j;
    }
    case kTimedelta:
      if (!int_fields(p, 3)) return unknown();
      return tagged("$timedelta", timedelta_text(int_of(f[0]), int_of(f[1]), int_of(f[2])));
  }
  return unknown();
}

// Pickle protocol 2 and above start with PROTO (0x80) and the protocol number.
bool looks_pickled(std::string_view b) { return b.size() >= 2 && uint8_t(b[0]) == 0x80 && b[1] >= 2 && b[1] <= 5; }

}  // namespace

json value_json(const msgpack::object& o) {
  switch (o.type) {
    case msgpack::type::NIL: return nullptr;
    case msgpack::type::BOOLEAN: return o.via.boolean;
    case msgpack::type::POSITIVE_INTEGER: return o.via.u64;
    case msgpack::type::NEGATIVE_INTEGER: return o.via.i64;
    case msgpack::type::FLOAT32:
    case msgpack::type::FLOAT64:
      if (std::isfinite(o.via.f64)) return o.via.f64;
      return tagged("$float", std::isnan(o.via.f64) ? "nan" : o.via.f64 > 0 ? "inf" : "-inf");
    case msgpack::type::STR: {
      const std::string_view s = str_of(o);
      return valid_utf8(s) ? json(std::string(s)) : bytes_json(s);
    }
    case msgpack::type::BIN: return bytes_json(str_of(o));
    case msgpack::type::ARRAY: {
      json a = json::array();
      for (uint32_t i = 0; i < o.via.array.size; ++i) a.push_back(value_json(o.via.array.ptr[i]));
      return a;
    }
    case msgpack::type::MAP: {
      bool text_keys = true;
      for (uint32_t i = 0; i < o.via.map.size && text_keys; ++i)
        text_keys = o.via.map.ptr[i].key.type == msgpack::type::STR && valid_utf8(str_of(o.via.map.ptr[i].key));
      if (text_keys) {
        json m = json::object();
        for (uint32_t i = 0; i < o.via.map.size; ++i)
          m[std::string(str_of(o.via.map.ptr[i].key))] = value_json(o.via.map.ptr[i].val);
        return m;
      }
      json pairs = json::array();
      for (uint32_t i = 0; i < o.via.map.size; ++i)
        pairs.push_back(json::array({value_json(o.via.map.ptr[i].key), value_json(o.via.map.ptr[i].val)}));
      return tagged("$map", std::move(pairs));
    }
    case msgpack::type::EXT: return ext_json(o);
  }
  return nullptr;
}

namespace {

// A value the client compressed (compressed.h): zlib, zstd and lz4 rendered
// decoded (what the serializer wrote, with the flags left), others tagged.
json compressed_json(std::string_view value, uint64_t flags) {
  const int codec = codec_of(flags);
  std::string plain, err;
  if (decompress_frame(codec, value, &plain, &err)) return stored_value_json(plain, flags & ~kFlagCodecMask);
  json j = tagged("$compressed", codec_name(codec));
  j["data"] = base64(value);
  j["flags"] = flags;
  j["bytes"] = value.size();
  if (const int64_t len = frame_length(value); len >= 0) j["length"] = len;
  if (codec_native(codec)) j["error"] = err;  // lzma and the class: not done here, not an error
  return j;
}

}  // namespace

json stored_value_json(std::string_view value, uint64_t flags) {
  if (codec_of(flags)) return compressed_json(value, flags);
  if (flags) {  // another SERIALIZER's bytes, or bits this build does not know (compression, ...)
    if (flags == kFlagSerialized && looks_pickled(value)) return with_size("$pickle", value);
    json j = tagged("$serialized", base64(value));
    j["flags"] = flags;
    j["bytes"] = value.size();
    return j;
  }
  try {
    size_t off = 0;
    msgpack::object_handle h = msgpack::unpack(value.data(), value.size(), off);
    if (off == value.size()) return value_json(h.get());
  } catch (const std::exception&) {
  }
  return with_size("$raw", value);
}

std::string json_text(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

}  // namespace nearcache::daemon
