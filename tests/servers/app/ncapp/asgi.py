"""ASGI entry point of ncapp (uvicorn ncapp.asgi:application)."""
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ncapp.settings")
application = get_asgi_application()
