"""What the helpers for real servers (nearcached, redis-server; memcached in
bench/servers.py) share: one child process, waited for until it listens,
signalled, stopped or killed, its log read back, and killed when the test
process ends if a test left it running.

Subclasses set `self.proc` (a Popen) and `self.log_path`, call
`self._started()` after spawning, and choose what leaving a `with` block
does.
"""
from __future__ import annotations

import atexit
import json
import signal
import socket
import subprocess
import time
from pathlib import Path

_live: set["ChildProcess"] = set()


@atexit.register
def _reap() -> None:
    for p in list(_live):
        p.kill()


class ChildProcess:
    proc: subprocess.Popen | None = None
    log_path: Path
    log_tail: int | None = None  # characters of the log that log() returns; None: all

    def _started(self) -> None:
        _live.add(self)

    def wait_listening(self, path: str, timeout: float = 10.0, what: str = "the server") -> None:
        """Waits until something accepts connections on the Unix socket `path`;
        raises if the process exits first or nothing listens within `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.connect(path)
                return
            except OSError:
                time.sleep(0.01)
        raise TimeoutError(f"{what} did not listen on {path}:\n{self.log()}")

    def signal(self, sig: int) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def pause(self) -> None:
        """SIGSTOP: connections stay open, nothing is answered."""
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (after SIGCONT, should it be paused) and wait; returns the exit status."""
        if not self.proc:
            return None
        self.resume()
        self.signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        _live.discard(self)
        return rc

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, like a crash."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        _live.discard(self)

    def log(self) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return text[-self.log_tail:] if self.log_tail else text

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def __enter__(self):
        return self


class JsonLinesChild:
    """A child process that answers each line written to its stdin with one JSON
    line on its stdout: the shape of the client processes the fault and
    packaging tests drive, one command at a time. Stderr is kept for the
    failure message."""

    def __init__(self, argv: list[str], **popen) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, **popen)

    def ask(self, line: str) -> dict:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        out = self.proc.stdout.readline()
        assert out, f"the child exited ({self.proc.poll()}): {self.proc.stderr.read()}"
        return json.loads(out)

    def close(self) -> str:
        """Ends the child (EOF on its stdin, then kill after 10 s); its stderr, asserting it exited 0."""
        self.proc.stdin.close()
        try:
            rc = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        err = self.proc.stderr.read()
        assert rc == 0, f"the child exited {rc}: {err}"
        return err
