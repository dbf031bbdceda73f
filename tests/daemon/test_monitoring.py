"""The Grafana dashboard and the Prometheus alert rules in packaging/ against
the real `nearcache status --prometheus` output of running daemons, with and
without a Redis tier: every metric they name is one the daemon prints (the
Redis ones only with Redis), counters are only rated, gauges never, and the
simple threshold rules fire on the output of a daemon in that state."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from helpers import cli
from support.nearcached import Daemon
from support.redis_server import RedisServer
from support.wait import wait_for

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "packaging/grafana/nearcache.json"
ALERTS = ROOT / "packaging/prometheus/nearcache-alerts.yml"
METRIC = re.compile(r"\bnearcache_[a-z0-9_]+\b")
RATED = re.compile(r"\b(?:rate|irate|increase)\(\s*$")


def exposition(text: str) -> tuple[dict[str, str], dict[str, float]]:
    """(# TYPE of each metric, value of each sample) of Prometheus text."""
    types, samples = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            types[name] = kind
        elif line and not line.startswith("#"):
            m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)", line)
            assert m, line
            samples[m.group(1)] = float(m.group(3))
    assert set(samples) == set(types)
    return types, samples


def prometheus(socket: str) -> tuple[dict[str, str], dict[str, float]]:
    r = cli("--socket", socket, "status", "--prometheus")
    return exposition(r.stdout)


def alert_rules() -> list[dict]:
    doc = yaml.safe_load(ALERTS.read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    assert rules
    return rules


def dashboard_exprs() -> list[str]:
    d = json.loads(DASHBOARD.read_text())
    exprs = []

    def walk(panels):
        for p in panels:
            exprs.extend(t["expr"] for t in p.get("targets", []))
            walk(p.get("panels", []))

    walk(d["panels"])
    exprs.extend(v["definition"] for v in d["templating"]["list"] if v["type"] == "query")
    assert len(exprs) > 20
    return exprs


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """The real --prometheus output without and with a Redis tier."""
    tmp = tmp_path_factory.mktemp("mon")
    plain = Daemon(tmp / "plain")
    try:
        without = prometheus(plain.socket)
    finally:
        assert plain.stop() == 0, plain.log()
    with RedisServer(tmp) as r:
        tiered = Daemon(tmp / "tiered", redis_url=r.url)
        try:
            with_redis = prometheus(tiered.socket)
        finally:
            assert tiered.stop() == 0, tiered.log()
    return without, with_redis


def check_names(exprs: list[str], outputs) -> set[str]:
    (plain_types, _), (redis_types, _) = outputs
    used = set()
    for e in exprs:
        for m in METRIC.finditer(e):
            name = m.group(0)
            used.add(name)
            assert name in redis_types, f"{name} is not in the daemon's output: {e}"
            if not name.startswith("nearcache_redis_"):
                assert name in plain_types, f"{name} is printed only with Redis: {e}"
            rated = bool(RATED.search(e[: m.start()]))
            if redis_types[name] == "counter":
                assert rated, f"counter {name} used without rate()/increase(): {e}"
            else:
                assert not rated, f"gauge {name} used in rate()/increase(): {e}"
    return used


def test_redis_metrics_appear_only_with_redis(outputs):
    (plain_types, _), (redis_types, _) = outputs
    redis_only = set(redis_types) - set(plain_types)
    assert redis_only and all(n.startswith("nearcache_redis_") for n in redis_only)
    assert not any(n.startswith("nearcache_redis_") for n in plain_types)


def test_dashboard_names_only_printed_metrics(outputs):
    used = check_names(dashboard_exprs(), outputs)
    d = json.loads(DASHBOARD.read_text())
    assert d["uid"] == "nearcache" and d["title"]
    # The panels a look at the cache starts with.
    for name in ("nearcache_up", "nearcache_hits_total", "nearcache_misses_total", "nearcache_hit_ratio_1m",
                 "nearcache_evictions_total", "nearcache_memory_used_bytes", "nearcache_redis_connected",
                 "nearcache_redis_queue_depth", "nearcache_redis_queue_dropped_total", "nearcache_slow_clients_total"):
        assert name in used, name
    ids = []

    def walk(panels):
        for p in panels:
            ids.append(p["id"])
            walk(p.get("panels", []))

    walk(d["panels"])
    assert len(ids) == len(set(ids)), "panel ids are unique"


def test_alert_rules_are_well_formed_and_name_only_printed_metrics(outputs):
    rules = alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    for r in rules:
        assert set(r) <= {"alert", "expr", "for", "labels", "annotations"}, r["alert"]
        assert r["labels"]["severity"] in ("critical", "warning", "info"), r["alert"]
        assert r["annotations"]["summary"], r["alert"]
        if "for" in r:
            assert re.fullmatch(r"\d+[smh]", r["for"]), r["alert"]
    check_names([r["expr"] for r in rules], outputs)
    for wanted in ("NearcacheDown", "NearcacheHitRatioLow", "NearcacheEvictionsHigh", "NearcacheRedisDown",
                   "NearcacheRedisNotCoherent", "NearcacheWriteBehindDropping", "NearcacheSlowClients"):
        assert wanted in names, wanted


def firing(samples: dict[str, float]) -> set[str]:
    """The rules of the form `metric == N` that these samples satisfy."""
    out = set()
    for r in alert_rules():
        m = re.fullmatch(r"\s*(nearcache_\w+) == (\d+)\s*", r["expr"])
        if m and samples.get(m.group(1)) == float(m.group(2)):
            out.add(r["alert"])
    return out


def test_state_rules_fire_on_the_real_output(tmp_path):
    """Healthy: none fires. Daemon gone: NearcacheDown. Redis gone: its link rules."""
    with RedisServer(tmp_path) as r:
        d = Daemon(tmp_path / "nc", redis_url=r.url)
        try:
            # Healthy once the invalidation link is up and proven (a fresh daemon is not yet coherent).
            wait_for(lambda: prometheus(d.socket)[1]["nearcache_redis_coherent"] == 1, what="a coherent link")
            assert firing(prometheus(d.socket)[1]) == set()
            r.kill()
            wait_for(lambda: prometheus(d.socket)[1]["nearcache_redis_connected"] == 0, what="the link down")
            fired = firing(prometheus(d.socket)[1])
            assert "NearcacheRedisDown" in fired and "NearcacheDown" not in fired
        finally:
            assert d.stop() == 0, d.log()
    gone = cli("--socket", d.socket, "status", "--prometheus")
    assert gone.returncode == 3
    assert firing(exposition(gone.stdout)[1]) == {"NearcacheDown"}
