"""A throwaway Redis Cluster for the tests: real ``redis-server`` nodes, never a mock.

``primaries`` nodes (and ``replicas`` per primary) run in cluster mode on free loopback
ports, each in a directory of its own under one temp dir, configured on their command
lines (no persistence; the cluster bus on a free port of its own, ``cluster-port``);
``redis-cli --cluster create --cluster-yes`` assigns the slots. The cluster is ready
when every node says ``cluster_state:ok``. Every node is stopped by PID on exit.

``url()`` is the ``redis+cluster://host:port,host:port,...`` URL that ``limits`` (and so
``REDIS_URL``) takes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import redis
from redis.cluster import ClusterNode, RedisCluster

from deploy.processes import free_port
from tests.support.redis import HOST, RedisServer, RedisUnavailable, find_binary

READY_TIMEOUT_S = 30.0


class RedisClusterServers:
    def __init__(self, nodes: list[RedisServer], primaries: int) -> None:
        self.nodes = nodes
        self.primaries = primaries
        self._replica_of: dict[int, int] = {}

    def url(self) -> str:
        hosts = ",".join(f"{HOST}:{node.port}" for node in self.nodes[: self.primaries])
        return f"redis+cluster://{hosts}"

    def client(self) -> RedisCluster:
        return RedisCluster(
            startup_nodes=[ClusterNode(HOST, node.port) for node in self.nodes],
            socket_timeout=2.0,
            socket_connect_timeout=2.0,
        )

    def keys_per_node(self) -> dict[int, int]:
        """Port -> number of keys held, for every node (replicas hold their primary's)."""
        counts = {}
        for node in self.nodes:
            with node.client() as conn:
                counts[node.port] = int(conn.dbsize())
        return counts

    def list_entries(self) -> int:
        """Entries of every list on every primary: a moving window holds one per hit."""
        total = 0
        for node in self.nodes:
            with node.client() as conn:
                if conn.info("replication").get("role") != "master":
                    continue
                for key in conn.scan_iter():
                    if conn.type(key) == b"list":
                        total += int(conn.llen(key))
        return total

    def _primaries(self) -> Iterator[RedisServer]:
        for node in self.nodes:
            if not node.running:
                continue
            with node.client() as conn:
                if conn.info("replication").get("role") == "master":
                    yield node

    def script_calls(self) -> int:
        """Scripts run by every live primary so far (EVAL and EVALSHA)."""
        total = 0
        for node in self._primaries():
            with node.client() as conn:
                stats = conn.info("commandstats")
            total += sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))
                         for name in ("eval", "evalsha"))  # fmt: skip
        return total

    def quota_keys_per_node(self, containing: str = "") -> dict[int, int]:
        """Port -> the guard quota's keys (``hq:*``) each live primary holds."""
        counts = {}
        for node in self._primaries():
            with node.client() as conn:
                counts[node.port] = sum(1 for _ in conn.scan_iter(match=f"hq:*{containing}*"))
        return counts

    def node_of(self, key: str) -> RedisServer:
        """The primary that holds ``key``'s slot now."""
        with self.client() as client:
            port = client.get_node_from_key(key).port
        [node] = [n for n in self.nodes if n.port == port]
        return node

    def kill(self, port: int) -> None:
        """SIGKILL the node on ``port``: a primary lost with no goodbye."""
        [node] = [n for n in self.nodes if n.port == port]
        assert node.process is not None
        os.kill(node.process.pid, signal.SIGKILL)
        node.process.wait(timeout=10)

    def wait_for_failover(self, port: int, timeout: float) -> int:
        """Wait until a replica of the node that was on ``port`` is a primary; its port."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node.port == port or not node.running:
                    continue
                try:
                    with node.client() as conn:
                        info = conn.info("replication")
                        if info.get("role") == "master" and info.get("connected_slaves", 0) == 0:
                            state = conn.cluster("INFO").get("cluster_state")
                            if state == "ok" and self._was_replica_of(node, port):
                                return node.port
                except redis.RedisError:
                    pass
            time.sleep(0.1)
        raise RedisUnavailable(f"no replica of {port} took over within {timeout}s")

    def _was_replica_of(self, node: RedisServer, port: int) -> bool:
        return self._replica_of.get(node.port) == port

    def record_roles(self) -> None:
        """Remember which primary each replica follows (before anything is killed)."""
        self._replica_of = {}
        for node in self.nodes:
            with node.client() as conn:
                info = conn.info("replication")
            if info.get("role") == "slave":
                self._replica_of[node.port] = int(info["master_port"])

    def ready(self) -> bool:
        for node in self.nodes:
            try:
                with node.client() as conn:
                    info = conn.cluster("INFO")  # parsed into a dict by redis-py
            except redis.RedisError:
                return False
            if info.get("cluster_state") != "ok":
                return False
            if str(info.get("cluster_slots_assigned")) != "16384":
                return False
        return True


def _node(binary: Path, root: Path) -> RedisServer:
    port, bus = free_port(), free_port()
    directory = root / str(port)
    directory.mkdir()
    extra = [
        "--cluster-enabled",
        "yes",
        "--cluster-port",
        str(bus),
        "--cluster-config-file",
        str(directory / "nodes.conf"),
        "--cluster-node-timeout",
        "2000",
    ]
    return RedisServer(binary, directory, port, extra)


def _create(binary: Path, nodes: list[RedisServer], replicas: int) -> None:
    cli = binary.with_name("redis-cli")
    if not cli.exists():
        found = shutil.which("redis-cli")
        if found is None:
            raise RedisUnavailable("redis-cli not found (it comes with redis-server)")
        cli = Path(found)
    command = [str(cli), "--cluster", "create"]
    command += [f"{HOST}:{node.port}" for node in nodes]
    command += ["--cluster-replicas", str(replicas), "--cluster-yes"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        raise RedisUnavailable(
            f"redis-cli --cluster create failed:\n{result.stdout}{result.stderr}"
        )


@contextlib.contextmanager
def running_redis_cluster(primaries: int = 3, replicas: int = 0) -> Iterator[RedisClusterServers]:
    """A ready cluster of ``primaries`` (each with ``replicas``); stopped by PID on exit."""
    binary = find_binary()
    root = Path(tempfile.mkdtemp(prefix="housing-redis-cluster-"))
    nodes: list[RedisServer] = []
    try:
        for _ in range(primaries * (1 + replicas)):
            for _attempt in range(3):  # a port may be taken between probe and bind
                node = _node(binary, root)
                try:
                    node.start()
                except RedisUnavailable:
                    if "Address already in use" in node.log:
                        shutil.rmtree(node.root, ignore_errors=True)
                        continue
                    raise
                break
            else:
                raise RedisUnavailable(f"a cluster node could not bind a port:\n{node.log}")
            nodes.append(node)
        _create(binary, nodes, replicas)
        cluster = RedisClusterServers(nodes, primaries)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not cluster.ready():
            if time.monotonic() > deadline:
                raise RedisUnavailable("the cluster did not reach cluster_state:ok")
            time.sleep(0.1)
        if replicas:
            cluster.record_roles()
        yield cluster
    finally:
        for node in nodes:  # all at once, then wait for each (stop() signals again: harmless)
            if node.process is not None and node.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(node.process.pid, signal.SIGTERM)
        for node in nodes:
            node.stop()
        shutil.rmtree(root, ignore_errors=True)
