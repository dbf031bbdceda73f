"""ncapp serves every backend the HTTP benchmark compares, with the same answers.

One Django process per backend (settings are per process), each with its real
server: nearcached, redis-server (RedisCache and django-redis), memcached
(PyMemcacheCache, skipped where memcached or pymemcache is not installed:
scripts/install-deps.sh bench). The views run through Django's test client,
sync and async forms alike.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from appserver import APP_DIR
from support.nearcached import Daemon
from support.redis_server import RedisServer

# Run in the backend's process: every view twice, sync and async; prints what it saw.
PROBE = r"""
import json, django
django.setup()
from django.test import Client
from django.conf import settings
c = Client()
out = {"backend": c.get("/status").json()["backend"]}
for form in ("", "/async"):
    c.get(form + "/set/k" + form.strip("/") + "/hello")
    out[form + "get"] = c.get(form + "/get/k" + form.strip("/")).json()["value"]
    out[form + "miss"] = c.get(form + "/get/never" + form.strip("/")).json()["value"]
    pages = [c.get(form + "/fragments").content.decode() for _ in range(2)]
    out[form + "fragments"] = [p.count('class="fragment"') for p in pages] + [len(pages[0]), pages[0] == pages[1]]
    out[form + "throttle"] = [c.get(form + "/throttle", {"ident": "t" + form}).json()["n"] for _ in range(25)]
from django.core.cache import cache
out["fragments_cached"] = len(cache.get_many([f"fragment:{i}" for i in range(10)]))
out["counts"] = c.get("/status").json()["counts"]
print(json.dumps(out))
"""

BACKENDS = {
    "nearcache": "nearcache.django.NearCache",
    "locmem": "django.core.cache.backends.locmem.LocMemCache",
    "redis": "django.core.cache.backends.redis.RedisCache",
    "django_redis": "django_redis.cache.RedisCache",
    "pymemcache": "django.core.cache.backends.memcached.PyMemcacheCache",
}


@pytest.fixture
def location(request, tmp_path):
    """The LOCATION of a live server for the backend under test."""
    kind = request.node.callspec.params["kind"]
    if kind == "nearcache":
        with Daemon(tmp_path) as d:
            yield d.socket
    elif kind in ("redis", "django_redis"):
        if kind == "django_redis" and importlib.util.find_spec("django_redis") is None:
            pytest.skip("django-redis is not installed (bench/requirements.txt)")
        r = RedisServer(tmp_path, aof=False)
        yield f"unix://{r.socket}"
        r.kill()
    elif kind == "pymemcache":
        if not shutil.which("memcached") or importlib.util.find_spec("pymemcache") is None:
            pytest.skip("memcached or pymemcache is not installed (scripts/install-deps.sh bench)")
        sock = str(tmp_path / "memcached.sock")
        args = ["memcached", "-s", sock, "-a", "0700", "-m", "16"] + (["-u", "root"] if os.geteuid() == 0 else [])
        mc = subprocess.Popen(args)
        try:
            deadline = time.monotonic() + 10
            while not os.path.exists(sock) and time.monotonic() < deadline:
                time.sleep(0.02)
            yield f"unix:{sock}"
        finally:
            mc.kill()
            mc.wait()
    else:
        yield ""


@pytest.mark.parametrize("kind", list(BACKENDS))
def test_every_view_on_every_backend(kind, location):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "ncapp.settings", "PYTHONPATH": str(APP_DIR),
           "NCAPP_CACHE": kind, "NCAPP_LOCATION": location}
    r = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.splitlines()[-1])
    assert out["backend"] == BACKENDS[kind]
    for form in ("", "/async"):
        assert out[form + "get"] == "hello"
        assert out[form + "miss"] is None
        n1, n2, size, same = out[form + "fragments"]
        assert (n1, n2, same) == (10, 10, True)  # built on the first request, read back on the second
        assert 10 * 190 < size < 10 * 210 + 20
        assert out[form + "throttle"] == list(range(1, 21)) + [20] * 5  # read, prepend, write back; capped
    assert out["fragments_cached"] == 10
    assert out["counts"] == {"set": 1, "get": 2, "fragments": 2, "throttle": 25,
                             "aset": 1, "aget": 2, "afragments": 2, "athrottle": 25}
