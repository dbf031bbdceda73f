// client-py/native/state.h — what the parts of nearcache._native share: the
// extension type codes, the entry flag, and the module state (imported types,
// interned names) that module.cc fills in at import.
// The files: encoder, decoder (the codec), segment (the reader binding),
// django_hit (NearCache's hit path), module (definition, registration).
//
// One interpreter, GIL held throughout: the state is plain globals.
#pragma once

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <cstddef>
#include <cstdint>

namespace nearcache::py {

// Extension type codes. Keep in sync with nearcache/serializer.py and
// client-py/README.md. 1..63 are language-neutral; 64.. are Python-only.
enum ExtCode : int8_t {
  EXT_TUPLE = 1,
  EXT_SET = 2,
  EXT_FROZENSET = 3,
  EXT_DATETIME = 4,
  EXT_DATE = 5,
  EXT_TIME = 6,
  EXT_TIMEDELTA = 7,
  EXT_DECIMAL = 8,
  EXT_UUID = 9,
  EXT_BIGINT = 10,
  EXT_PICKLE = 64,
};

// The codes by name, as the module exports them (EXT_CODES).
struct ExtName {
  const char* name;
  ExtCode code;
};
inline constexpr ExtName kExtNames[] = {
    {"tuple", EXT_TUPLE},       {"set", EXT_SET},         {"frozenset", EXT_FROZENSET}, {"datetime", EXT_DATETIME},
    {"date", EXT_DATE},         {"time", EXT_TIME},       {"timedelta", EXT_TIMEDELTA}, {"decimal", EXT_DECIMAL},
    {"uuid", EXT_UUID},         {"bigint", EXT_BIGINT},   {"pickle", EXT_PICKLE},
};

// Entry flag bit: the value is not nearcache msgpack but the output of the
// cache's configured serializer (SERIALIZER option).
constexpr int FLAG_SERIALIZED = 0x01;

constexpr int kMaxDepth = 512;  // nesting limit of encoder and decoder alike

// Module state, set by PyInit__native (module.cc).
inline PyObject* g_pickle_loads = nullptr;
inline PyObject* g_decimal_type = nullptr;
inline PyObject* g_uuid_type = nullptr;
inline PyObject* g_timezone_type = nullptr;  // datetime.timezone
// Interned names (module.cc lists their text).
inline PyObject *s_bytes, *s_key, *s_getinitargs, *s_validate_key;
inline PyObject *s_get_miss, *s_get_slow, *s_get_many_miss, *s_get_many_slow, *s_get_pending, *s_reap;

// zoneinfo.ZoneInfo, imported on first use (borrowed); nullptr with an
// exception set when the import fails.
PyObject* zoneinfo_type();

}  // namespace nearcache::py
