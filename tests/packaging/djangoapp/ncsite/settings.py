"""The smallest Django project that uses nearcache, as README-operations.md tells."""
import os

SECRET_KEY = "nearcache-packaging-test"
DEBUG = False
INSTALLED_APPS: list[str] = []
USE_TZ = True
CACHES = {
    "default": {
        "BACKEND": "nearcache.django.NearCache",
        "LOCATION": os.environ.get("NEARCACHE_TEST_SOCKET", "/run/nearcache/nearcached.sock"),
        "TIMEOUT": 300,
        # Raise instead of degrading to misses: the test must see every failure.
        "OPTIONS": {"STRICT": True, "SOCKET_TIMEOUT": 2.0},
    }
}
