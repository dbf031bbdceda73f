// client-py/native/encoder.h — Python value -> nearcache msgpack (packb).
//
// msgpack plus nearcache's extension types (state.h, client-py/README.md);
// what has no extension type goes to the caller's fallback (pickle), or is a
// TypeError without one.
#pragma once

#include "state.h"

namespace nearcache::py {

// datetime.h keeps its C API pointer per file: imports it for encoder.cc.
// 0, or -1 with an exception set. Called once at module import.
int encoder_ready();

// New bytes object, or nullptr with an exception set. fallback: obj -> bytes,
// or nullptr / None.
PyObject* packb_obj(PyObject* value, PyObject* fallback);

}  // namespace nearcache::py
