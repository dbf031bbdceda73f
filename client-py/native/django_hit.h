// client-py/native/django_hit.h — nearcache._native.CacheCore, the C base of
// nearcache.django.NearCache: Django's default key building and validation,
// the shared-memory lookup and the decoding of a hit in one call, with no
// Python frame in between. Misses and unusual keys go back to Python
// (_nc_get_miss, _nc_get_slow, ... on the subclass).
#pragma once

#include "state.h"

namespace nearcache::py {

extern PyTypeObject CacheCoreType;

// Fills in CacheCoreType and readies it; 0, or -1 with an exception set.
int cache_core_type_ready();

}  // namespace nearcache::py
