"""End-to-end checks of the running compose stack, from the host (tests/containers/run.sh).

Run with the project's venv after the pipeline has published an index:
  - both recall servers answer Recall on their loopback-published ports, for a user with a
    vector (SOURCE_USER_VECTOR) and an unknown one (SOURCE_FALLBACK), with the same versions;
  - bad requests get INVALID_ARGUMENT, a corrupt user vector DATA_LOSS;
  - with Redis stopped the answers are degraded, and after Redis restarts the user vectors
    are still there (AOF persistence);
  - Prometheus has both servers up, the project's alert rules loaded, and returns series for
    every Grafana dashboard query and every alert rule's expression (its threshold removed).

Environment: RECALL_TARGETS (comma-separated host:port), PROMETHEUS_URL, REDIS_URL (the
stack's Redis on its published loopback port), COMPOSE (the compose command, with -f and -p,
for stopping/starting Redis).
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import redis
import yaml

from serving.api.recall.v1 import recall_pb2
from serving.client import RecallClient

ROOT = Path(__file__).resolve().parents[2]
TARGETS = os.environ["RECALL_TARGETS"].split(",")
PROMETHEUS = os.environ["PROMETHEUS_URL"].rstrip("/")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:36390/0")
COMPOSE = shlex.split(os.environ["COMPOSE"])
USER_VECTOR = recall_pb2.SOURCE_USER_VECTOR
FALLBACK = recall_pb2.SOURCE_FALLBACK


def compose(*args: str) -> str:
    done = subprocess.run([*COMPOSE, *args], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise SystemExit(f"FAIL: {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def redis_client() -> redis.Redis:
    """The stack's Redis through its loopback-published port (REDIS_URL)."""
    return redis.Redis.from_url(REDIS_URL, socket_timeout=5)


def check(cond: bool, what: str) -> None:
    if not cond:
        raise SystemExit(f"FAIL: {what}")
    print(f"ok   {what}")


def status_code(fn: Callable[[], object]) -> grpc.StatusCode:
    try:
        fn()
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def prom_query(expr: str) -> list[dict]:
    url = f"{PROMETHEUS}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as reply:
        body = json.load(reply)
    if body.get("status") != "success":
        raise SystemExit(f"FAIL: Prometheus rejected {expr!r}: {body}")
    return body["data"]["result"]


def without_threshold(expr: str) -> str:
    """An alert's expression minus its comparisons with constants: the values it compares."""
    comparison = r"\s*(==|!=|>=|<=|>|<)\s*[0-9][0-9.e+\-*\s]*(?=\)|$|\s+and\b|\s+or\b)"
    return re.sub(comparison, "", expr.strip())


def main() -> int:
    clients = [RecallClient(t, timeout_s=5.0) for t in TARGETS]
    first = clients[0].recall("no-such-user-ci", 10)
    check(first.source == FALLBACK and len(first.candidates) == 10, "unknown user → fallback")
    model = first.model_version
    store = redis_client()
    key = [k.decode() for k in store.scan_iter(f"recall:uv:{model}:*", count=1000)]
    check(bool(key), f"user vectors of model {model} in Redis")
    user = key[0].split(":", 3)[3]

    for target, client in zip(TARGETS, clients, strict=True):
        reply = client.recall(user, 10)
        ids = [c.item_id for c in reply.candidates]
        check(
            reply.source == USER_VECTOR and len(ids) == 10 and len(set(ids)) == 10,
            f"{target}: Recall(user {user}, k=10) → 10 distinct candidates from its vector",
        )
        check(
            (reply.model_version, reply.index_version) == (model, first.index_version),
            f"{target}: serves model {model}, index {first.index_version}",
        )
        code = status_code(functools.partial(client.recall, user, 0))
        check(code == grpc.StatusCode.INVALID_ARGUMENT, f"{target}: k=0 → INVALID_ARGUMENT")

    store.set(f"recall:uv:{model}:ci-corrupt", "xx")
    code = status_code(lambda: clients[0].recall("ci-corrupt", 10))
    store.delete(f"recall:uv:{model}:ci-corrupt")
    store.close()
    check(
        code not in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT),
        f"corrupt user vector → server-side error ({code.name})",
    )

    for _ in range(50):
        for client in clients:
            client.recall(user, 20)
            client.recall(f"cold-{_}", 20)
        clients[0].batch_recall([recall_pb2.RecallRequest(user_id=user, k=5)] * 4)

    compose("stop", "-t", "5", "redis")
    try:
        degraded = [c.recall(user, 10) for c in clients for _ in range(10)]
        check(
            all(r.source == recall_pb2.SOURCE_FALLBACK_DEGRADED for r in degraded),
            "Redis stopped → degraded answers (SOURCE_FALLBACK_DEGRADED), no errors",
        )
    finally:
        compose("start", "redis")
    deadline = time.monotonic() + 60
    after: recall_pb2.RecallResponse | None = None
    while time.monotonic() < deadline:
        try:
            after = clients[0].recall(user, 10)
            if after.source == USER_VECTOR:
                break
        except grpc.RpcError:
            pass
        time.sleep(1)
    check(
        after is not None and after.source == USER_VECTOR,
        "Redis restarted → the user vectors survived (AOF), answers from the vector again",
    )
    for client in clients:
        for i in range(20):
            client.recall(user, 10)
            client.recall(f"cold-again-{i}", 10)

    time.sleep(12)  # two scrapes (5 s) of the traffic above
    up = prom_query('up{job="recall-server"} == 1')
    check(len(up) == 2, "Prometheus scrapes both recall servers (up == 1)")
    rules = json.load(urllib.request.urlopen(f"{PROMETHEUS}/api/v1/rules", timeout=10))
    loaded = {r["name"] for g in rules["data"]["groups"] for r in g["rules"]}
    alerts = yaml.safe_load((ROOT / "infra/prometheus/alerts.yml").read_text())
    rules_by_name = {r["alert"]: r for g in alerts["groups"] for r in g["rules"] if "alert" in r}
    wanted = {name: r["expr"] for name, r in rules_by_name.items()}
    check(set(wanted) <= loaded, f"Prometheus loaded the {len(wanted)} alert rules")
    # The pipeline-run alerts read node_exporter's textfile collector on the Airflow hosts
    # (pipelines/run_metrics.py); this stack runs no node_exporter, so their series cannot
    # exist here. The file itself is checked by tests/integration/test_server_ops.py.
    textfile = sorted(
        name
        for name, r in rules_by_name.items()
        if r.get("labels", {}).get("source") == "pipeline-textfile"
    )
    if textfile:
        print(f"skip {', '.join(textfile)}: node_exporter textfile metrics, not in this stack")
    wanted = {name: expr for name, expr in wanted.items() if name not in textfile}

    dashboard = json.loads((ROOT / "infra/grafana/dashboards/recall.json").read_text())
    queries = {
        f"panel {p.get('title')!r}": t["expr"]
        for p in dashboard["panels"]
        for t in p.get("targets", [])
        if t.get("expr")
    }
    queries |= {f"alert {name}": without_threshold(expr) for name, expr in wanted.items()}
    empty = []
    for what, expr in queries.items():
        expr = expr.replace("$__rate_interval", "1m").replace("$instance", ".*")
        if not prom_query(expr):
            empty.append(f"{what}: {expr}")
    check(
        not empty,
        f"all {len(queries)} dashboard and alert queries return series"
        + ("" if not empty else ":\n  " + "\n  ".join(empty)),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
