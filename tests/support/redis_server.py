"""Start and stop real redis-server processes for tests.

    with RedisServer(tmp_path) as r:          # a Unix socket in tmp_path
        r.url                                  # unix:///...sock, with credentials when set
        r.tcp_url()                            # redis://127.0.0.1:PORT (tcp=True)
        r.client().get("nc:k")                 # a redis-py client on the socket
        r.kill(); r.start(); r.pause(); r.resume(); r.stop()

Two daemons given the same `r.url` act as two hosts sharing one Redis.

Options: tcp=True also listens on a free port of 127.0.0.1; password="..."
sets requirepass; user=("alice", "pw") adds an ACL user with every
permission; aof=True (the default) keeps an append-only file so that a
SIGKILLed server comes back with every write it acknowledged. The binary is
`redis-server` from PATH (scripts/install-deps.sh test installs it). Every
server started here is killed when the test process ends, and its files
live in the directory given.
"""
from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from .process import ChildProcess

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer(ChildProcess):
    log_tail = 4000

    def __init__(self, directory, name: str = "redis", tcp: bool = False, password: str | None = None,
                 user: tuple[str, str] | None = None, aof: bool = True, start: bool = True, **config):
        self.dir = Path(directory) / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.socket = str(self.dir / "redis.sock")
        self.tcp = tcp
        self.port = 0
        self.password = password
        self.user = user
        self.aof = aof
        self.config = {k: str(v) for k, v in config.items()}  # extra redis.conf settings
        self.log_path = self.dir / "redis.log"
        if start:
            self.start()

    # -- addresses -----------------------------------------------------------
    def _creds(self, creds: str | None) -> str:
        if creds is not None:
            return creds + "@" if creds else ""
        if self.password is not None:
            return f":{self.password}@"
        return ""

    @property
    def url(self) -> str:
        """unix:// URL for redis_url, with the server's password if it has one."""
        return f"unix://{self._creds(None)}{self.socket}"

    def unix_url(self, creds: str | None = None, db: int = 0) -> str:
        return f"unix://{self._creds(creds)}{self.socket}" + (f"?db={db}" if db else "")

    def tcp_url(self, host: str = "127.0.0.1", creds: str | None = None, db: int = 0) -> str:
        assert self.tcp, "RedisServer(tcp=True) for a TCP port"
        return f"redis://{self._creds(creds)}{host}:{self.port}" + (f"/{db}" if db else "")

    # -- lifecycle -----------------------------------------------------------
    def args(self) -> list[str]:
        a = ["redis-server", "--port", str(self.port if self.tcp else 0), "--bind", "127.0.0.1",
             "--unixsocket", self.socket, "--unixsocketperm", "700", "--dir", str(self.dir),
             "--logfile", str(self.log_path), "--save", "", "--appendonly", "yes" if self.aof else "no",
             "--appendfsync", "no", "--daemonize", "no", "--protected-mode", "no"]
        if self.password is not None:
            a += ["--requirepass", self.password]
        if self.user:
            a += ["--user", self.user[0], "on", ">" + self.user[1], "~*", "&*", "+@all"]
        for k, v in self.config.items():
            a += ["--" + k.replace("_", "-"), v]
        return a

    def start(self, timeout: float = 10.0) -> "RedisServer":
        for attempt in range(5):
            if self.tcp and (self.port == 0 or attempt > 0):
                self.port = free_port()
            self.proc = subprocess.Popen(self.args(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.STDOUT)
            self._started()
            if self._wait_ready(timeout):
                return self
        raise RuntimeError(f"redis-server did not start:\n{self.log()}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False  # e.g. lost the race for the port
            try:
                if self._ping():
                    return True
            except OSError:
                pass
            time.sleep(0.01)
        self.kill()
        raise TimeoutError(f"redis-server did not answer on {self.socket}:\n{self.log()}")

    def _ping(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            s.connect(self.socket)
            req = b""
            if self.password is not None:
                p = self.password.encode()
                req += b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(p), p)
            req += b"*1\r\n$4\r\nPING\r\n"
            s.sendall(req)
            data = b""
            while b"PONG" not in data and b"-LOADING" not in data and b"-ERR" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            return b"+PONG" in data

    def restart(self) -> "RedisServer":
        self.stop()
        return self.start()

    # -- inspection ----------------------------------------------------------
    def client(self, **kwargs):
        """A redis-py client on the Unix socket (bytes in, bytes out), without
        redis-py's retries so that a stopped or killed server shows at once."""
        import redis  # from requirements-dev.txt
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        kwargs.setdefault("retry", Retry(NoBackoff(), 0))
        return redis.Redis(unix_socket_path=self.socket, password=self.password, **kwargs)

    def calls(self, command: str) -> int:
        """Calls of one command since start (or CONFIG RESETSTAT), from INFO commandstats."""
        stats = self.client().info("commandstats")
        return int(stats.get(f"cmdstat_{command.lower()}", {}).get("calls", 0))

    def __exit__(self, *exc) -> None:
        self.kill()


class Sentinel(ChildProcess):
    """A real Redis Sentinel (`redis-server CONF --sentinel`, Debian's redis-sentinel)
    monitoring `master` (a RedisServer with tcp=True) under `name`:

        s = Sentinel(tmp_path, "s1", primary, down_after_ms=500, failover_timeout_ms=1000)
        s.addr                                  # "127.0.0.1:PORT", for redis_sentinels
        s.master_addr()                         # (host, port) the Sentinel names now
        s.kill(); s.start()

    Quorum 1 by default: one Sentinel may fail over alone. Its config file
    (which Sentinel rewrites) and log live in the directory given."""
    log_tail = 4000

    def __init__(self, directory, name: str, master: RedisServer, master_name: str = "mymaster", quorum: int = 1,
                 down_after_ms: int = 500, failover_timeout_ms: int = 1000, password: str | None = None,
                 start: bool = True, tls: Path | None = None, master_port: int | None = None):
        self.dir = Path(directory) / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = 0
        self.master_name = master_name
        self.password = password
        self.log_path = self.dir / "sentinel.log"
        self.conf = self.dir / "sentinel.conf"
        # tls: a directory of support.certs.make_pki; the Sentinel then listens
        # on TLS only and reaches the servers over TLS (master_port: their TLS port).
        self.tls = tls
        self._monitor = (master_port or master.port, quorum, down_after_ms, failover_timeout_ms, master.password)
        if start:
            self.start()

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _write_conf(self) -> None:
        port, quorum, down_after, failover, master_pw = self._monitor
        lines = [f"port {self.port}", "bind 127.0.0.1", "daemonize no", f"dir {self.dir}",
                 f"logfile {self.log_path}", "protected-mode no",
                 f"sentinel monitor {self.master_name} 127.0.0.1 {port} {quorum}",
                 f"sentinel down-after-milliseconds {self.master_name} {down_after}",
                 f"sentinel failover-timeout {self.master_name} {failover}",
                 f"sentinel parallel-syncs {self.master_name} 1"]
        if master_pw is not None:
            lines.append(f"sentinel auth-pass {self.master_name} {master_pw}")
        if self.password is not None:
            lines.append(f"requirepass {self.password}")
        if self.tls:
            lines[0] = "port 0"
            lines += [f"tls-port {self.port}", f"tls-cert-file {self.tls / 'server.crt'}",
                      f"tls-key-file {self.tls / 'server.key'}", f"tls-ca-cert-file {self.tls / 'ca.crt'}",
                      "tls-auth-clients no", "tls-replication yes"]
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 10.0) -> "Sentinel":
        fresh = self.port == 0
        for attempt in range(5):
            if fresh and (self.port == 0 or attempt > 0):
                self.port = free_port()
                self._write_conf()  # a restart keeps what Sentinel learned (its rewritten file)
            self.proc = subprocess.Popen(["redis-server", str(self.conf), "--sentinel"], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            self._started()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    self.master_addr()
                    return self
                except OSError:
                    time.sleep(0.01)
        raise RuntimeError(f"redis-sentinel did not start:\n{self.log()}")

    def command(self, *args: str):
        import redis  # from requirements-dev.txt
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        tls = dict(ssl=True, ssl_ca_certs=str(self.tls / "ca.crt")) if self.tls else {}
        c = redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=2,
                        retry=Retry(NoBackoff(), 0), decode_responses=True, **tls)
        try:
            return c.execute_command(*args)
        except redis.exceptions.ConnectionError as e:
            raise OSError(str(e)) from e
        finally:
            c.close()

    def master_addr(self) -> tuple[str, int]:
        host, port = self.command("SENTINEL", "get-master-addr-by-name", self.master_name)
        return host, int(port)

    def __exit__(self, *exc) -> None:
        self.kill()
