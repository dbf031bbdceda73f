"""WSGI entry point of ncapp (gunicorn ncapp.wsgi:application)."""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ncapp.settings")
application = get_wsgi_application()
