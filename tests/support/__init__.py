"""Helpers shared by the Python test suites: real daemons, real redis-servers."""
