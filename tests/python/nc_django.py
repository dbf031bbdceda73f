"""Django configuration for the Python client's tests (imported by conftest.py).

Configured once, the way Django's own runner configures it for tests/cache:
sqlite in memory, and the `cache` test app when Django's suite could be
fetched (DJANGO_SUITE_ERROR says why not; test_django_suite.py reports it).
"""
from __future__ import annotations

import shutil
import sys
import tempfile
from contextlib import contextmanager

from support.nearcached import Daemon

DJANGO_SUITE_ERROR: BaseException | None = None
urlpatterns: list = []


def configure() -> None:
    global DJANGO_SUITE_ERROR
    import django
    from django.conf import settings

    if settings.configured:
        return
    apps = ["django.contrib.contenttypes", "django.contrib.auth"]
    try:
        from django_suite import suite_dir
        sys.path.insert(0, str(suite_dir()))
        apps.append("cache")
    except Exception as e:  # reported by test_django_suite.py
        DJANGO_SUITE_ERROR = e
    settings.configure(
        DEBUG=False,
        SECRET_KEY="nearcache-tests",
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        INSTALLED_APPS=apps,
        CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
        MIDDLEWARE=[],
        TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}],
        USE_TZ=False,
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        ROOT_URLCONF=__name__,
    )
    django.setup()


def nearcache_settings(socket_path: str, **options) -> dict:
    """A CACHES entry for NearCache on that socket."""
    return {"BACKEND": "nearcache.django.NearCache", "LOCATION": socket_path, "OPTIONS": options}


# -- Django's own cache suite (test_django_suite*.py) -------------------------
def suite_module():
    """Django's tests/cache/tests.py, or a RuntimeError saying why it is missing."""
    if DJANGO_SUITE_ERROR is not None:
        raise RuntimeError(f"cannot fetch Django's cache test suite: {DJANGO_SUITE_ERROR}")
    import cache.tests
    return cache.tests


def suite_directory(name: str) -> tuple[str, str]:
    """A new temporary directory for one suite module's servers, and the daemon's socket path in it."""
    directory = tempfile.mkdtemp(prefix=f"nearcache-{name}-")
    return directory, f"{directory}/nc.sock"


def suite_caches(socket_path: str, strict: bool = True) -> dict:
    """CACHES for BaseCacheTests on NearCache (strict unless told), without
    the "cull" caches (as for Django's RedisCacheTests: MAX_ENTRIES does not apply)."""
    t = suite_module()
    return t.caches_setting_for_tests(base=nearcache_settings(socket_path, STRICT=strict),
                                      exclude=t.redis_excluded_caches)


def suite_daemon(directory: str):
    """A suite module's daemon in `directory`, inside Django's test environment;
    the directory is removed afterwards. Yield from it in a module fixture."""
    d = Daemon(directory)
    with test_environment():
        yield d
    d.stop()
    shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def test_environment():
    """What Django's runner sets up around a test run: the test environment and its databases."""
    from django.test.utils import setup_databases, setup_test_environment, teardown_databases, \
        teardown_test_environment
    setup_test_environment()
    old = setup_databases(verbosity=0, interactive=False)
    try:
        yield
    finally:
        teardown_databases(old, verbosity=0)
        teardown_test_environment()
