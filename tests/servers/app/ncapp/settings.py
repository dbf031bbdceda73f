"""Settings of ncapp: the cache backend comes from the environment, so one app
serves every backend the real-server tests and the HTTP benchmark compare.

    NCAPP_CACHE           nearcache (default) | locmem | django_redis | redis | pymemcache
    NCAPP_LOCATION        the backend's LOCATION: nearcached's socket, a redis or memcached URL
    NCAPP_SOCKET_TIMEOUT  seconds (nearcache, django_redis); default 1.0

NearCache runs fail-open (STRICT off), as a site would: a stalled daemon must
turn into misses, never into exceptions or hung requests.
"""
import os

SECRET_KEY = "nearcache-servers-test"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "ncapp.urls"
USE_TZ = True
LOGGING_CONFIG = None  # no setup: 500s and nearcache's warnings reach the server's log (Python's last-resort handler)

_kind = os.environ.get("NCAPP_CACHE", "nearcache")
_location = os.environ.get("NCAPP_LOCATION", "")
_timeout = float(os.environ.get("NCAPP_SOCKET_TIMEOUT", "1.0"))

_backends = {
    "nearcache": {"BACKEND": "nearcache.django.NearCache", "LOCATION": _location,
                  "OPTIONS": {"STRICT": False, "SOCKET_TIMEOUT": _timeout}},
    "locmem": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "ncapp",
               "OPTIONS": {"MAX_ENTRIES": 100000}},
    "django_redis": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": _location,
                     "OPTIONS": {"SOCKET_TIMEOUT": _timeout, "SOCKET_CONNECT_TIMEOUT": _timeout}},
    "redis": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": _location},
    "pymemcache": {"BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache", "LOCATION": _location},
}
if _kind not in _backends:
    raise RuntimeError(f"NCAPP_CACHE={_kind!r}: one of {', '.join(_backends)}")
CACHES = {"default": {**_backends[_kind], "TIMEOUT": 300}}
