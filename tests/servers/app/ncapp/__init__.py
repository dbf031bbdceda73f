"""ncapp: the Django project that tests/servers and bench/client_http_backends.py serve."""
