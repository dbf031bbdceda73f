"""Native key building and validation behave exactly like Django's make_key/validate_key."""
from __future__ import annotations

import warnings

import pytest
from django.core.cache.backends.base import BaseCache, CacheKeyWarning

from nearcache.django import NearCache

KEYS = ["k", "a" * 20, "unicodé-清-😀", "with:colons", "a" * 244, "a" * 245, "a" * 400, "sp ace", "tab\tkey",
        "ctl\x01", "del\x7f", "", "ünï" * 100]


def cache(**params):
    return NearCache("/nonexistent/nc.sock", params)


def django_key(c, key, version=None):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        k = BaseCache.make_and_validate_key(c, key, version=version)
    return k, [str(x.message) for x in w]


def native_key(c, key, version=None):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        kb = c._nc_key(key, version)
    assert kb is not None
    return kb.decode(), [str(x.message) for x in w]


@pytest.mark.parametrize("params", [{}, {"KEY_PREFIX": "pre"}, {"KEY_PREFIX": "p é"}, {"VERSION": 7},
                                    {"KEY_PREFIX": "x" * 100, "VERSION": -3}])
@pytest.mark.parametrize("key", KEYS, ids=range(len(KEYS)))
@pytest.mark.parametrize("version", [None, 2, -1, 10 ** 12])
def test_native_key_equals_django(params, key, version):
    c = cache(**params)
    assert c._nc_native_keys
    assert native_key(c, key, version) == django_key(c, key, version)


def test_custom_key_function_uses_python():
    c = cache(KEY_FUNCTION=lambda key, prefix, version: f"custom-{key}")
    assert not c._nc_native_keys
    assert c._nc_key("a") is None
    assert c._key("a") == b"custom-a"


def test_key_func_replaced_at_run_time():
    c = cache()
    assert c._nc_native_keys
    old = c.key_func
    c.key_func = lambda key, *args: key
    assert not c._nc_native_keys
    with pytest.warns(CacheKeyWarning, match="'x y'"):  # Django's validate_key, in Python
        assert c._key("x y") == b"x y"
    c.key_func = old
    assert c._nc_native_keys and c._key("x") == b":1:x"


def test_prefix_and_version_changed_at_run_time():
    c = cache()
    c.key_prefix, c.version = "new", 3
    assert c._key("k") == b"new:3:k"
    c.version = "v"  # not an int: Django formats it with %s
    assert not c._nc_native_keys and c._key("k") == b"new:v:k"


def test_subclass_overriding_make_key_is_respected():
    class Mine(NearCache):
        def make_key(self, key, version=None):
            return "mine-" + key

    c = Mine("/nonexistent/nc.sock", {})
    assert not c._nc_native_keys and c._key("k") == b"mine-k"


def test_non_str_keys_take_the_python_path():
    c = cache()
    assert c._nc_key(42) is None and c._key(42) == b":1:42"


def test_warning_category_and_error_mode():
    c = cache()
    with pytest.warns(CacheKeyWarning):
        c._nc_key("a b")
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheKeyWarning)
        with pytest.raises(CacheKeyWarning):
            c._nc_key("a b")
