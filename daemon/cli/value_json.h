// daemon/cli/value_json.h — msgpack values as JSON (nlohmann), for `nearcache
// get` and `status --json`: every value the Python client writes, readable.
//
// Native msgpack maps to JSON as it is (str as text; a str that is not UTF-8
// and every bin as {"$bytes": "<base64>"}: Python's bytes and str stay apart).
// The client's extension types (client-py/README.md, "Value format") become
// tagged objects named as the client names the codes: {"$tuple": [...]},
// {"$set": [...]}, {"$frozenset": [...]}, {"$datetime": "<isoformat>"},
// {"$date": ...}, {"$time": ...}, {"$timedelta": "<str(td)>"},
// {"$decimal": "1.50"}, {"$uuid": "..."}, {"$bigint": "<digits>"},
// {"$pickle": "<base64>", "bytes": N}; a map with a key that is not a str is
// {"$map": [[key, value], ...]}; NaN and infinities are {"$float": "nan"}.
#pragma once

#include <cstdint>
#include <msgpack.hpp>
#include <nlohmann/json.hpp>
#include <string_view>

namespace nearcache::daemon {

nlohmann::ordered_json value_json(const msgpack::object& o);

// A stored value and its entry flags (protocol.md): one msgpack object is
// rendered as above. A value with flags (the client's FLAG_SERIALIZED: another
// SERIALIZER's bytes; or bits this CLI does not know) is not read as msgpack:
// {"$pickle": ...} when the flags are FLAG_SERIALIZED alone and the bytes are
// a pickle, else {"$serialized": "<base64>", "flags": F, "bytes": N}. Bytes
// that are not one msgpack object are {"$raw": "<base64>", "bytes": N}.
// A value the client compressed (flags bits 1-3, compressed.h) is shown
// decoded for zlib, zstd and lz4 (then read as above with the rest of its
// flags); lzma, a COMPRESSOR class's codec and a frame that does not decode
// are {"$compressed": "lzma"|"class"|..., "data": "<base64>", "flags": F,
// "bytes": N, "length": <announced uncompressed length>[, "error": why]}.
nlohmann::ordered_json stored_value_json(std::string_view value, uint64_t flags);

// One line of JSON, UTF-8 as it is (not \u-escaped).
std::string json_text(const nlohmann::ordered_json& j);

}  // namespace nearcache::daemon
