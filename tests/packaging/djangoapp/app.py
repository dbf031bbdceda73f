"""A Django process using nearcache through django.core.cache.cache.

    app.py use      set, get (a hit from shared memory), incr, delete; prints JSON
    app.py serve    one JSON reply per command line on stdin: set K V | get K | state
Run by the packaging tests as an app user, with DJANGO_SETTINGS_MODULE=ncsite.settings.
"""
import datetime
import json
import sys

import django

django.setup()

from django.core.cache import cache  # noqa: E402
from nearcache import _native  # noqa: E402


def state() -> dict:
    seg = cache._client.segment
    return {"segment_open": seg.is_open, "generation": seg.generation, "segment": cache._client.segment_path,
            "shm_hits": _native.Segment.totals()["hits"]}


def use() -> dict:
    value = {"n": 1, "when": datetime.date(2026, 1, 2), "pair": (1, "é")}
    out = {"set": cache.set("greeting", value, 60)}
    before = _native.Segment.totals()["hits"]
    out["get_equal"] = cache.get("greeting") == value
    out["shm_hits_for_get"] = _native.Segment.totals()["hits"] - before
    out["incr"] = (cache.set("counter", 41), cache.incr("counter"))[1]
    out["delete"] = cache.delete("greeting")
    out["after_delete"] = cache.get("greeting", "gone")
    out.update(state())
    return out


def serve() -> None:
    for line in sys.stdin:
        cmd, *args = line.split()
        try:
            if cmd == "set":
                reply = {"ok": cache.set(args[0], args[1], 600)}
            elif cmd == "get":
                reply = {"value": cache.get(args[0])}
            else:
                reply = {}
            reply.update(state())
        except Exception as e:  # reported, not fatal: the test decides
            reply = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "use":
        print(json.dumps(use()))
    else:
        serve()
