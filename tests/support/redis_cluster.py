"""A real Redis Cluster for tests: `masters` cluster-enabled redis-servers
(and `replicas` per master) on free TCP ports, joined with
`redis-cli --cluster create`, ready once every node says cluster_state:ok.

    c = RedisCluster(tmp_path, masters=3)
    c.url                       # redis://127.0.0.1:PORT of the first node (the seed)
    c.node_of(b"nearcache:k")   # the RedisServer that serves the key's slot now
    c.nodes                     # every RedisServer; c.masters() those that are masters now
    c.kill()

Node i lives in tmp_path/node<i> (nodes.conf kept there, so a node restarted
with start() rejoins with its identity). tls=<a support.certs.make_pki
directory>: every node also listens on a TLS port and announces it (tls-cluster:
the bus and CLUSTER SLOTS use TLS), and c.url is the first node's rediss:// URL.
"""
from __future__ import annotations

import subprocess
import time

from .redis_server import RedisServer, free_port
from .wait import wait_for


class RedisCluster:
    def __init__(self, directory, masters: int = 3, replicas: int = 0, node_timeout_ms: int = 1000,
                 tls=None):
        self.nodes: list[RedisServer] = []
        self.tls = tls
        try:
            for i in range(masters * (1 + replicas)):
                # An explicit bus port: the default (port + 10000) refuses ports above 55535.
                extra = dict(cluster_port=free_port())
                if tls:
                    extra.update(tls_port=free_port(), tls_cluster="yes", tls_replication="yes",
                                 tls_cert_file=tls / "server.crt", tls_key_file=tls / "server.key",
                                 tls_ca_cert_file=tls / "ca.crt", tls_auth_clients="no")
                self.nodes.append(RedisServer(directory, name=f"node{i}", tcp=True, aof=False,
                                              cluster_enabled="yes", cluster_config_file="nodes.conf",
                                              cluster_node_timeout=node_timeout_ms,
                                              cluster_require_full_coverage="no",
                                              cluster_replica_validity_factor=0, **extra))
            addrs = [f"127.0.0.1:{self.port_of(n)}" for n in self.nodes]
            tls_args = ["--tls", "--cacert", str(tls / "ca.crt")] if tls else []
            subprocess.run(["redis-cli", *tls_args, "--cluster", "create", *addrs, "--cluster-replicas",
                            str(replicas), "--cluster-yes"], check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.STDOUT, timeout=60)
            wait_for(self.ok, 30, "the cluster to be ok on every node")
            if replicas:
                wait_for(self.synced, 30, "every replica to be in sync with its master")
        except BaseException:
            self.kill()
            raise

    def port_of(self, n: RedisServer) -> int:
        """The port the node announces: its TLS port with tls=."""
        return int(n.config["tls_port"]) if self.tls else n.port

    @property
    def url(self) -> str:
        if self.tls:
            return f"rediss://127.0.0.1:{self.port_of(self.nodes[0])}"
        return self.nodes[0].tcp_url()

    def alive(self) -> list[RedisServer]:
        return [n for n in self.nodes if n.proc and n.proc.poll() is None]

    def ok(self) -> bool:
        try:
            return all(b"cluster_state:ok" in n.client().execute_command("CLUSTER", "INFO") for n in self.alive())
        except Exception:
            return False

    def synced(self) -> bool:
        infos = [n.client().info("replication") for n in self.alive()]
        return sum(i["role"] == "slave" and i.get("master_link_status") == "up" for i in infos) == \
            sum(i["role"] == "slave" for i in infos) > 0

    def slot(self, key: bytes) -> int:
        return int(self.alive()[0].client().execute_command("CLUSTER", "KEYSLOT", key))

    def owner(self, slot: int) -> RedisServer:
        """The master serving `slot` as the first live node sees it."""
        for start, end, master, *_ in self.alive()[0].client().execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                port = int(master[1])
                return next(n for n in self.nodes if port in (n.port, self.port_of(n)))  # plain or TLS view
        raise KeyError(slot)

    def node_of(self, key: bytes) -> RedisServer:
        return self.owner(self.slot(key))

    def masters(self) -> list[RedisServer]:
        return [n for n in self.alive() if n.client().info("replication")["role"] == "master"]

    def node_id(self, n: RedisServer) -> str:
        return n.client().execute_command("CLUSTER", "MYID").decode()

    def keys(self, pattern: bytes = b"*") -> dict[int, list[bytes]]:
        """Keys per live master's port (SCAN of each)."""
        return {n.port: list(n.client().scan_iter(match=pattern, count=1000)) for n in self.masters()}

    def get(self, key: bytes):
        return self.node_of(key).client().get(key)

    def move_slot(self, slot: int, to: RedisServer, during=None, batch: int = 10) -> None:
        """Migrates `slot` by hand (SETSLOT IMPORTING/MIGRATING, MIGRATE in
        batches, SETSLOT NODE everywhere), calling during() between batches."""
        src = self.owner(slot)
        src_id, dst_id = self.node_id(src), self.node_id(to)
        to.client().execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        src.client().execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        while True:
            keys = src.client().execute_command("CLUSTER", "GETKEYSINSLOT", slot, batch)
            if not keys:
                break
            src.client().execute_command("MIGRATE", "127.0.0.1", self.port_of(to),  # TLS with tls-cluster
                                         "", 0, 5000, "REPLACE", "KEYS", *keys)
            if during:
                during()
        for n in self.masters():
            n.client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        wait_for(lambda: self.owner(slot) is to, 10, "every node to see the slot moved")

    def kill(self) -> None:
        for n in self.nodes:
            n.kill()
