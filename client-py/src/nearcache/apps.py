"""nearcache/apps.py — the `nearcache` Django app: listed in INSTALLED_APPS, it
registers the system check of NearCache's CACHES entries (nearcache.settings)
before `manage.py check` and `runserver` run the checks, even when nothing
has imported the backend yet."""
from django.apps import AppConfig


class NearCacheConfig(AppConfig):
    name = "nearcache"
    verbose_name = "nearcache"

    def ready(self):
        import nearcache.django  # noqa: F401  (registers nearcache.settings.check_caches)
