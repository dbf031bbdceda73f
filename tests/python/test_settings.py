"""Settings that fail loudly (nearcache.settings): unknown options with the nearest
name, Redis URLs and lists as LOCATION, django-redis options that cannot apply,
raised as ImproperlyConfigured at first use and reported by `manage.py check`;
django-redis names that mean the same thing keep working."""
from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
import textwrap

import pytest
from django.core.exceptions import ImproperlyConfigured

from nearcache import settings as ncs
from nearcache.django import MisconfiguredNearCache, NearCache


def errors(location="", **options):
    return ncs.parse(location, {"OPTIONS": options}).errors


def test_unknown_option_names_the_nearest(module_daemon, make_cache):
    c = make_cache(module_daemon, SOCKET_TIMOUT=2)
    assert isinstance(c, MisconfiguredNearCache) and isinstance(c, NearCache)
    for call in (lambda: c.get("k"), lambda: c.set("k", 1), lambda: c.get_many(["k"]), lambda: c.incr("k")):
        with pytest.raises(ImproperlyConfigured, match=r"unknown option OPTIONS\['SOCKET_TIMOUT'\] "
                                                       r"\(did you mean 'SOCKET_TIMEOUT'\?\)"):
            call()
    c.close()  # Django calls it after every request: stays quiet
    assert errors(STRICTT=True) == ["unknown option OPTIONS['STRICTT'] (did you mean 'STRICT'?)"]
    assert errors(FROBNICATE=1) == ["unknown option OPTIONS['FROBNICATE']"]


def test_unknown_entry_key():
    s = ncs.parse("", {"BACKEND": ncs.BACKEND, "OPTOINS": {"STRICT": True}})
    assert s.errors == ["unknown CACHES key 'OPTOINS' (did you mean 'OPTIONS'?)"]


@pytest.mark.parametrize("location", ["redis://127.0.0.1:6379/1", "rediss://h:6380", "redis://a,redis://b",
                                      ["redis://a", "redis://b"], ("/run/a.sock",)])
def test_location_url_or_list_is_an_error(module_daemon, make_cache, location):
    c = NearCache(location, {})
    with pytest.raises(ImproperlyConfigured, match="LOCATION .*redis_url"):
        c.get("k")


def test_unix_location_still_accepted(module_daemon):
    c = NearCache("unix://" + module_daemon.socket, {"OPTIONS": {"SYNC_WRITES": True}})
    c.set("unix-loc", 5)
    assert c.get("unix-loc") == 5


@pytest.mark.parametrize("name", sorted(ncs.REJECTED))
def test_options_that_cannot_apply_say_why(name):
    (e,) = errors(**{name: {"max_connections": 50}})
    assert e.startswith(f"OPTIONS['{name}'] cannot apply: ") and len(e) > 40


def test_bad_values_are_errors():
    assert errors(SOCKET_TIMEOUT="soon") == ["OPTIONS['SOCKET_TIMEOUT'] = 'soon': could not convert string to "
                                             "float: 'soon'"]
    assert "deadline" in errors(SOCKET_TIMEOUT=None)[0]
    assert "not a boolean" in errors(STRICT="maybe")[0]
    assert "pickle protocol" in errors(PICKLE_VERSION=99)[0]
    assert "SERIALIZER" in errors(SERIALIZER="no.such.module.Serializer")[0]
    assert "'yaml'" in errors(SERIALIZER="yaml")[0]
    assert "REVERSE_KEY_FUNCTION" in errors(REVERSE_KEY_FUNCTION="no.such.module.reverse")[0]
    assert "not a callable" in errors(REVERSE_KEY_FUNCTION=42)[0]


def test_django_redis_names_map(module_daemon, make_cache):
    s = ncs.parse("", {"OPTIONS": {"IGNORE_EXCEPTIONS": True, "SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 2,
                                   "PICKLE_VERSION": -1}})
    assert not s.errors and not s.warnings
    kw = s.client_kwargs()
    assert (kw["strict"], kw["connect_timeout"], kw["timeout"]) == (False, 0.5, 2.0)
    assert s.options["PICKLE_PROTOCOL"] == pickle.HIGHEST_PROTOCOL
    assert ncs.parse("", {"OPTIONS": {"IGNORE_EXCEPTIONS": False}}).client_kwargs()["strict"] is True
    assert ncs.parse("", {"OPTIONS": {"STRICT": True, "IGNORE_EXCEPTIONS": False}}).errors == []
    (e,) = errors(STRICT=True, IGNORE_EXCEPTIONS=True)
    assert e == "OPTIONS['IGNORE_EXCEPTIONS'] = True: contradicts STRICT=True"
    c = make_cache(module_daemon, IGNORE_EXCEPTIONS=False, PICKLE_VERSION=2, SYNC_WRITES=True)
    assert c._client.strict is True
    c.set("mapped", {"a": 1})
    assert c.get("mapped") == {"a": 1}


def test_default_client_class_accepted_with_a_warning(module_daemon, make_cache, caplog):
    with caplog.at_level(logging.WARNING, logger="nearcache.django"):
        c = make_cache(module_daemon, CLIENT_CLASS="django_redis.client.DefaultClient", SYNC_WRITES=True)
    assert type(c) is NearCache
    assert "CLIENT_CLASS" in caplog.text and "ignored" in caplog.text
    c.set("cc", 1)
    assert c.get("cc") == 1
    (e,) = errors(CLIENT_CLASS="django_redis.client.HerdClient")
    assert "cannot apply" in e


def test_django_options_that_do_not_apply_warn():
    s = ncs.parse("", {"OPTIONS": {"MAX_ENTRIES": 1000, "LOG_IGNORED_EXCEPTIONS": True}})
    assert s.errors == [] and len(s.warnings) == 1 and "MAX_ENTRIES" in s.warnings[0]
    assert "cannot switch that off" in ncs.parse("", {"OPTIONS": {"LOG_IGNORED_EXCEPTIONS": False}}).warnings[0]


def test_lowercase_names_still_work():
    assert ncs.parse("", {"OPTIONS": {"socket_timeout": 3}}).options["SOCKET_TIMEOUT"] == 3.0


def run_check(tmp_path, caches: dict, apps=("nearcache",)):
    """`manage.py check` of a project with these CACHES, in a process of its own."""
    (tmp_path / "proj_settings.py").write_text(textwrap.dedent(f"""
        SECRET_KEY = "x"
        INSTALLED_APPS = {list(apps)!r}
        DATABASES = {{}}
        CACHES = {caches!r}
    """))
    (tmp_path / "manage.py").write_text(textwrap.dedent("""
        import sys
        from django.core.management import execute_from_command_line
        execute_from_command_line(sys.argv)
    """))
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="proj_settings", PYTHONPATH=str(tmp_path))
    return subprocess.run([sys.executable, str(tmp_path / "manage.py"), "check"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


def test_manage_py_check_reports_errors(tmp_path):
    r = run_check(tmp_path, {
        "default": {"BACKEND": "nearcache.django.NearCache", "LOCATION": "",
                    "OPTIONS": {"SOCKET_TIMOUT": 1, "CONNECTION_POOL_KWARGS": {"max_connections": 5}}},
        "redis": {"BACKEND": "nearcache.django.NearCache", "LOCATION": "redis://127.0.0.1:6379/0"},
        "ok": {"BACKEND": "nearcache.django.NearCache", "LOCATION": "",
               "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient"}},
        "other": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "OPTIONS": {"SOCKET_TIMOUT": 1}},
    })
    assert r.returncode == 1, r.stdout + r.stderr
    err = r.stderr
    assert ("(nearcache.E001) CACHES['default']: unknown option OPTIONS['SOCKET_TIMOUT'] "
            "(did you mean 'SOCKET_TIMEOUT'?)") in err
    assert "(nearcache.E001) CACHES['default']: OPTIONS['CONNECTION_POOL_KWARGS'] cannot apply" in err
    assert "(nearcache.E001) CACHES['redis']: LOCATION 'redis://127.0.0.1:6379/0' is a URL" in err
    assert "(nearcache.W001) CACHES['ok']: OPTIONS['CLIENT_CLASS']" in err
    assert "CACHES['other']" not in err  # not a NearCache


def test_manage_py_check_passes_a_good_entry(tmp_path):
    r = run_check(tmp_path, {"default": {"BACKEND": "nearcache.django.NearCache", "LOCATION": "",
                                         "OPTIONS": {"SOCKET_TIMEOUT": 0.5, "IGNORE_EXCEPTIONS": True}}})
    assert r.returncode == 0 and "no issues" in r.stdout, r.stdout + r.stderr


# -- SERIALIZER: "json", "pickle" and django-redis's classes, constructed with OPTIONS --
DR = "django_redis.serializers."


@pytest.mark.parametrize("name,value,back", [
    ("json", {"a": [1, "é"], "n": None}, {"a": [1, "é"], "n": None}),
    ("json", ("t", 1), ["t", 1]),                                   # JSON has no tuples
    (DR + "json.JSONSerializer", {"d": __import__("datetime").date(2024, 5, 6)}, {"d": "2024-05-06"}),
    (DR + "pickle.PickleSerializer", {"s": {1, 2}}, {"s": {1, 2}}),
    (DR + "msgpack.MSGPackSerializer", {"b": b"\x00", "l": [1.5]}, {"b": b"\x00", "l": [1.5]}),
    ("pickle", {"s": frozenset([3])}, {"s": frozenset([3])}),
])
def test_serializers_round_trip(module_daemon, make_cache, name, value, back):
    c = make_cache(module_daemon, SERIALIZER=name, SYNC_WRITES=True)
    assert type(c) is NearCache
    c.set("ser", value)
    assert c.get("ser") == back
    assert c.get_many(["ser"]) == {"ser": back}
    c.set("ser-n", 41)  # integers stay msgpack: the daemon adds to them
    assert c.incr("ser-n") == 42 and c.get("ser-n") == 42


def test_django_redis_serializer_gets_the_options(module_daemon, make_cache):
    c = make_cache(module_daemon, SERIALIZER=DR + "pickle.PickleSerializer", PICKLE_VERSION=2, SYNC_WRITES=True)
    c.set("pv", {"x": 1})
    data, flags = c._client.fetch(c.make_key("pv").encode())[:2]
    assert data[:2] == b"\x80\x02" and flags == 1  # protocol 2, FLAG_SERIALIZED
    assert "PICKLE_VERSION" in errors(SERIALIZER=DR + "pickle.PickleSerializer", PICKLE_VERSION="x")[0]


def test_another_serializers_value_is_a_counted_miss(module_daemon, make_cache):
    j = make_cache(module_daemon, SERIALIZER="json", SYNC_WRITES=True)
    m = make_cache(module_daemon, SYNC_WRITES=True)
    j.set("ser-x", {"a": 1})
    before = m._client.counters["undecodable"]
    assert m.get("ser-x", "dflt") == "dflt"
    assert m._client.counters["undecodable"] > before


def test_a_serializer_that_raises_anything_is_a_counted_miss(module_daemon, make_cache):
    # pickle.loads of JSON raises UnpicklingError (not a ValueError): a miss on the native hit path too
    j = make_cache(module_daemon, SERIALIZER="json", SYNC_WRITES=True)
    p = make_cache(module_daemon, SERIALIZER="pickle", WARN_INTERVAL=0)
    j.set("ser-raise", {"a": 1})
    assert p.get("ser-raise", "miss") == "miss"  # the first call maps the segment
    before = p._client.counters["undecodable"]
    st, _ = p._client.segment.get(p.make_key("ser-raise").encode())[:2]
    assert st == 0  # a hit in shared memory: the native path decodes it
    assert p.get("ser-raise", "miss") == "miss" and p.get_many(["ser-raise"]) == {}
    assert p._client.counters["undecodable"] > before
