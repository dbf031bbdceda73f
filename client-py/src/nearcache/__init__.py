"""nearcache: a per-host shared-memory cache for Django app servers.

    nearcache.Client                 bytes-level client of nearcached
    nearcache.django.NearCache       the Django cache backend
    nearcache.get_cached_data        cache-or-compute helper, computed once per host
    nearcache.packb / unpackb        the value format (client-py/README.md)
"""
from nearcache._native import packb, unpackb
from nearcache.client import Client
from nearcache.core import Lease
from nearcache.helpers import get_cached_data
from nearcache.protocol import CacheUnavailable, KeyTooLong, NearcacheError, ProtocolError, ValueTooLarge

__all__ = ["Client", "Lease", "get_cached_data", "packb", "unpackb", "CacheUnavailable", "KeyTooLong",
           "NearcacheError", "ProtocolError", "ValueTooLarge"]
__version__ = "0.1.0"
