"""Waiting on observable state instead of sleeping: a test that must know the
daemon has reached a point (a request waits, a line is logged, a queue drained)
polls for it, so it neither races on a slow machine nor idles on a fast one.

    wait_for(lambda: conn.status()["lease_waiters"] == 1, what="b to wait for the lease")
"""
from __future__ import annotations

import time


def wait_for(cond, timeout: float = 10.0, what: str = "condition", interval: float = 0.005):
    """Polls cond() until it returns something true and returns that; TimeoutError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def wait_logged(process, text: str, timeout: float = 10.0) -> str:
    """Waits until `text` is in the log of a support.process.ChildProcess; returns the log."""
    return wait_for(lambda: (lambda log: log if text in log else None)(process.log()), timeout,
                    f"{text!r} in {process.log_path}")


def wait_status(source, what: str | None = None, timeout: float = 10.0, **expected) -> dict:
    """Polls STATUS until every field named has its expected value; returns that status.

    source is a support.rawproto.RawConn (its own connection answers) or a
    support.nearcached.Daemon (a fresh connection for each poll).

        wait_status(conn, lease_waiters=2)      # both LEASE requests are waiting now
    """
    from support.rawproto import RawConn

    def poll():
        if isinstance(source, RawConn):
            st = source.status()
        else:
            with RawConn(source.socket) as c:
                st = c.status()
        return st if all(st.get(k) == v for k, v in expected.items()) else None

    return wait_for(poll, timeout, what or ", ".join(f"{k} = {v!r}" for k, v in expected.items()))
