"""The pytest helper for real redis-servers (tests/support/redis_server.py)
that the two-daemon end-to-end tests use."""
from __future__ import annotations

import time

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from support.redis_server import RedisServer


def test_unix_socket_kill_and_restart_keep_acknowledged_writes(tmp_path):
    with RedisServer(tmp_path) as r:
        assert r.url == f"unix://{r.socket}"
        c = r.client()
        c.set("nc:k", b"\x93\x01\x02\x03")
        assert r.calls("set") == 1
        r.kill()
        with pytest.raises(redis.ConnectionError):
            r.client().get("nc:k")
        r.start()  # append-only file: what it acknowledged comes back
        assert r.client().get("nc:k") == b"\x93\x01\x02\x03"


def test_pause_and_resume(tmp_path):
    with RedisServer(tmp_path) as r:
        r.pause()
        c = r.client(socket_timeout=0.2)
        t0 = time.monotonic()
        with pytest.raises(redis.TimeoutError):
            c.ping()
        assert time.monotonic() - t0 < 2
        r.resume()
        assert r.client().ping()


def test_password_acl_user_and_tcp(tmp_path):
    with RedisServer(tmp_path, tcp=True, password="pw", user=("alice", "wonder")) as r:
        assert r.url == f"unix://:pw@{r.socket}"
        assert r.tcp_url() == f"redis://:pw@127.0.0.1:{r.port}"
        assert r.unix_url("alice:wonder", db=2) == f"unix://alice:wonder@{r.socket}?db=2"
        assert redis.Redis(host="127.0.0.1", port=r.port, password="pw").ping()
        assert redis.Redis(unix_socket_path=r.socket, username="alice", password="wonder").ping()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(unix_socket_path=r.socket, password="wrong", retry=Retry(NoBackoff(), 0)).ping()
    assert r.proc.poll() is not None  # killed on leaving the block
