"""A test CA and a server certificate for 127.0.0.1 and localhost, made with
the `openssl` command (EC P-256, valid two days):

    d = make_pki(tmp_path)   # d/ca.crt, d/server.crt, d/server.key (mode 0600)
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_pki(d: Path) -> Path:
    d = Path(d)
    openssl("req", "-x509", *KEY, "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"), "-days", "2",
            "-subj", "/CN=nearcache-test-ca")
    (d / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("req", *KEY, "-keyout", str(d / "server.key"), "-out", str(d / "server.csr"), "-subj", "/CN=localhost")
    openssl("x509", "-req", "-in", str(d / "server.csr"), "-CA", str(d / "ca.crt"), "-CAkey", str(d / "ca.key"),
            "-CAcreateserial", "-out", str(d / "server.crt"), "-days", "2", "-extfile", str(d / "server.ext"))
    os.chmod(d / "server.key", 0o600)
    return d
