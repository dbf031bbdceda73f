"""The Redis tier over TLS, end to end: real nearcached processes (two daemons =
two hosts) on a redis-server that listens with TLS only (its plaintext Unix
socket serves the checks), with certificates this module makes with the
`openssl` command: a CA, a server certificate for localhost and 127.0.0.1, a
client certificate (mutual TLS), a second CA.
"""
from __future__ import annotations

import os
import subprocess

import pytest

from support.nearcached import NEARCACHE_CLI
from support.redis_server import free_port
from support.tier import client, shm, status, wait_coherent, wait_flushed, wait_for
from support.rawproto import mp
from support.wait import wait_logged

P = b"nearcache:"
KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")

    def ca(n):
        openssl("req", "-x509", *KEY, "-keyout", str(d / f"{n}.key"), "-out", str(d / f"{n}.crt"), "-days", "30",
                "-subj", f"/CN=nearcache-test-{n}")

    def leaf(n, issuer, ext):
        (d / f"{n}.ext").write_text(ext + "\n")
        openssl("req", *KEY, "-keyout", str(d / f"{n}.key"), "-out", str(d / f"{n}.csr"), "-subj", f"/CN={n}")
        openssl("x509", "-req", "-in", str(d / f"{n}.csr"), "-CA", str(d / f"{issuer}.crt"), "-CAkey",
                str(d / f"{issuer}.key"), "-CAcreateserial", "-out", str(d / f"{n}.crt"), "-days", "30",
                "-extfile", str(d / f"{n}.ext"))
        os.chmod(d / f"{n}.key", 0o600)

    ca("ca")
    ca("ca2")
    leaf("server", "ca", "subjectAltName=DNS:localhost,IP:127.0.0.1")
    leaf("client", "ca", "extendedKeyUsage=clientAuth")
    return d


@pytest.fixture
def tls_redis(redis_servers, pki):
    port = free_port()
    r = redis_servers("tls", tls_port=port, tls_cert_file=pki / "server.crt", tls_key_file=pki / "server.key",
                      tls_ca_cert_file=pki / "ca.crt", tls_auth_clients="yes")
    r.tls_url = f"rediss://localhost:{port}"
    return r


def mutual(pki) -> dict:
    return dict(redis_tls_ca_file=pki / "ca.crt", redis_tls_cert_file=pki / "client.crt",
                redis_tls_key_file=pki / "client.key")


def test_two_hosts_over_mutual_tls_write_behind_read_through_and_coherence(host, tls_redis, pki):
    a, b = host("a", url=tls_redis.tls_url, **mutual(pki)), host("b", url=tls_redis.tls_url, **mutual(pki))
    ca, cb = client(a), client(b)
    for i in range(100):
        ca.set(f"k{i}", mp(i))
    wait_flushed(a)
    r = tls_redis.client()
    assert r.exists(P + b"k99") == 1
    assert cb.get("k42") == mp(42)  # read through Redis over TLS, installed
    assert shm(cb, b"k42") == mp(42)
    ca.set("k42", mp(-1))
    wait_for(lambda: shm(cb, b"k42") != mp(42), 5, "the invalidation over TLS")
    assert cb.get("k42") == mp(-1)
    st = status(a)
    assert st["redis_tls"] == 1 and st["redis_tls_verify"] == 1
    assert st["redis"]["tls"] == "on" and st["redis"]["url"].startswith("rediss://")


def test_an_outage_over_tls_reconnects_and_flushes_the_queue(host, tls_redis, pki):
    a = host("a", url=tls_redis.tls_url, **mutual(pki))
    ca = client(a)
    ca.set("before", mp(1))
    wait_flushed(a)
    tls_redis.kill()
    ca.set("during", mp(2))
    tls_redis.start()
    wait_coherent(a)
    wait_flushed(a)
    assert tls_redis.client().exists(P + b"during") == 1


def test_a_server_from_another_ca_is_refused_with_the_reason_in_status(host, tls_redis, pki):
    a = host("a", url=tls_redis.tls_url, wait=False, redis_tls_ca_file=pki / "ca2.crt",
             redis_tls_cert_file=pki / "client.crt", redis_tls_key_file=pki / "client.key")
    # Both links fail; the data link's failure is the one in last_error.
    st = wait_for(lambda: (lambda s: s if "unknown CA" in s["redis"]["last_error"] else None)(status(a)), 10,
                  "the data link's verification failure")
    assert st["redis_tls_verify_failures_total"] >= 1
    assert st["redis_connected"] == 0
    assert "unknown CA" in st["redis"]["tls_verify_error"]
    assert "certificate verification failed: unknown CA" in st["redis"]["last_error"]
    text = subprocess.run([str(NEARCACHE_CLI), f"--socket={a.socket}", "status"], capture_output=True, text=True,
                          timeout=10).stdout
    assert "last TLS verification failure: certificate verification failed: unknown CA" in text
    wait_logged(a, "unknown CA")


def test_verify_off_connects_and_warns(host, redis_servers, pki):
    port = free_port()
    redis_servers("tls2", tls_port=port, tls_cert_file=pki / "server.crt", tls_key_file=pki / "server.key",
                  tls_ca_cert_file=pki / "ca.crt", tls_auth_clients="no")
    a = host("a", url=f"rediss://127.0.0.1:{port}", redis_tls_verify="false")  # the system store knows no test CA
    wait_logged(a, "redis_tls_verify is off")
    st = status(a)
    assert st["redis_connected"] == 1 and st["redis_tls_verify"] == 0
    assert st["redis"]["tls"] == "on, not verified"


def test_a_key_file_others_may_read_stops_the_daemon(tmp_path, pki):
    from support.nearcached import Daemon

    key = tmp_path / "open.key"
    key.write_bytes((pki / "client.key").read_bytes())
    key.chmod(0o644)
    d = Daemon(tmp_path, start=False, redis_url="rediss://localhost:1", redis_tls_cert_file=pki / "client.crt",
               redis_tls_key_file=key)
    r = subprocess.run(d.args(), capture_output=True, text=True, timeout=10)
    assert r.returncode == 2
    assert "redis_tls_key_file" in r.stderr + r.stdout and "chmod 600" in r.stderr + r.stdout


def test_sighup_reloads_the_certificates_for_new_connections(host, tls_redis, pki, tmp_path):
    import signal

    key = tmp_path / "client.key"
    key.write_bytes((pki / "client.key").read_bytes())
    key.chmod(0o600)
    a = host("a", url=tls_redis.tls_url, **{**mutual(pki), "redis_tls_key_file": key})
    key.chmod(0o644)  # a reload that cannot load the key keeps the previous certificates
    a.signal(signal.SIGHUP)
    wait_logged(a, "keeping the previous TLS certificates")
    assert "chmod 600" in a.log()
    key.chmod(0o600)
    a.signal(signal.SIGHUP)
    tls_redis.kill()  # new connections, with the reloaded certificates
    tls_redis.start()
    wait_coherent(a)
    assert a.log().count("keeping the previous TLS certificates") == 1
