// client-py/native/decoder.h — nearcache msgpack -> Python value (unpackb).
//
// Trusts nothing: every length is checked against the input, so a corrupt or
// hostile value raises ValueError instead of reading past the buffer.
#pragma once

#include "state.h"

namespace nearcache::py {

// datetime.h keeps its C API pointer per file: imports it for decoder.cc.
// 0, or -1 with an exception set. Called once at module import.
int decoder_ready();

// New reference to the value `p[0..len)` encodes (exactly one value, no
// trailing bytes), or nullptr with an exception set.
PyObject* unpack_buf(const uint8_t* p, size_t len);

}  // namespace nearcache::py
