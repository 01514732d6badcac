"""`make demo`: the whole product on ML-100K, started and stopped by one command."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from rich.console import Console

from recall_cli import paths
from recall_cli.local_redis import LocalRedis, LocalRedisError, port_in_use
from recall_cli.output import candidates_table
from recall_cli.progress import spinner_line
from recall_settings import defaults

DEMO_USERS = ("1", "42", "405", "no-such-user")
FRESH_USER = "1"
STAGES = 6


def _stage(console: Console, n: int, text: str) -> float:
    console.rule(f"[bold cyan]{n}/{STAGES} {text}")
    return time.monotonic()


def _stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()


def _wait_refresher_ready(store: Any, consumer: str, timeout_s: float) -> bool:
    """True once ``consumer`` joined the refreshers group: it does so with its first read,
    after loading the user tower, so events from then on are encoded at once."""
    import redis

    from keyspace.events import EVENTS_STREAM, REFRESHER_GROUP

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            consumers = store.xinfo_consumers(EVENTS_STREAM, REFRESHER_GROUP)
            if any(c["name"].decode() == consumer for c in consumers):
                return True
        except redis.ResponseError:
            pass  # no group yet
        time.sleep(0.2)
    return False


def _fresh_vectors(
    console: Console, client: Any, redis_url: str, titles: dict[str, str], consumer: str
) -> bool:
    """Record three interactions of FRESH_USER over gRPC, wait for the refresher to rewrite
    the user's vector, and show the candidates before and after (seen items excluded)."""
    import redis

    from keyspace.connection import redis_kwargs
    from keyspace.user_vectors import user_vector_key

    before = client.recall(FRESH_USER, 10, exclude_seen=True)
    console.print(candidates_table(f"{FRESH_USER} (exclude_seen, before)", before, titles))
    # Three films from far down this user's ranking: they should pull the vector elsewhere.
    deep = client.recall(FRESH_USER, 300, exclude_seen=True).candidates
    items = [c.item_id for c in deep[-3:]]
    key = user_vector_key(before.model_version, FRESH_USER)
    store = redis.Redis.from_url(redis_url, socket_timeout=5, **redis_kwargs(redis_url))
    try:
        if not _wait_refresher_ready(store, consumer, 60):
            console.print("[bold red]the refresher did not start within 60 s[/]")
            return False
        old_vector = store.get(key)
        sent = time.monotonic()
        reply = client.record_interactions([(FRESH_USER, item, 0) for item in items])
        console.print(
            f"RecordInteractions: user {FRESH_USER} watched "
            + "; ".join(titles.get(i, i) for i in items)
            + f" → {reply.accepted} accepted, {reply.unknown_items} unknown"
        )
        while store.get(key) == old_vector:
            if time.monotonic() - sent > 20:
                console.print("[bold red]the refresher did not rewrite the vector within 20 s[/]")
                return False
            time.sleep(0.05)
        console.print(f"refresher rewrote the user's vector {time.monotonic() - sent:.2f} s later")
    finally:
        store.close()
    after = client.recall(FRESH_USER, 10, exclude_seen=True)
    console.print(candidates_table(f"{FRESH_USER} (exclude_seen, after)", after, titles))
    moved = len({c.item_id for c in after.candidates} - {c.item_id for c in before.candidates})
    console.print(f"{moved} of the top-10 changed; the three new films are excluded as seen")
    return True


def _print_quality(console: Console, artifact_root: str) -> None:
    """One line each on how good the new model and index are (from their artifacts)."""
    from artifacts.store import ArtifactStore
    from serving.index.artifact import IndexManifest

    store = ArtifactStore(artifact_root)
    model_dir = store.local_dir("models", store.latest("models"))
    index_dir = store.local_dir("indexes", store.latest("indexes"))
    metrics = json.loads((model_dir / "metrics.json").read_text())
    index = IndexManifest.model_validate_json((index_dir / "manifest.json").read_text())
    console.print(
        f"model: next-item test recall@10 {metrics.get('recall@10', 0):.3f}, "
        f"NDCG@10 {metrics.get('ndcg@10', 0):.3f}, recall@100 {metrics.get('recall@100', 0):.3f} "
        f"(popularity recall@10 {metrics.get('popularity_recall@10', 0):.3f}); "
        f"{int(metrics.get('best_epoch', 0))} epochs chosen on validation, then refitted on "
        f"all interactions ({metrics.get('examples_per_second', 0):,.0f} examples/s)"
    )
    gate = ", ".join(f"recall@{q.k} {q.recall:.3f}" for q in index.quality_by_k or [index.quality])
    console.print(
        f"index: {index.factory} over {index.item_count} items on {index.build_device}, "
        f"exact re-rank ×{index.refine_factor}, nprobe={index.nprobe}: {gate} vs exact search"
    )


def run_demo(console: Console, epochs: int) -> int:
    """Returns the process exit code. Starts Redis and a server; always stops both."""
    from pipelines.runner import run_dag
    from serving.client import RecallClient
    from serving.index.params import DEFAULT_MIN_RECALL
    from training.data.ml100k import fetch_ml100k
    from training.data.schema import load_dataset

    began = time.monotonic()
    data = paths.data_dir()
    artifact_root = paths.default_artifact_root()
    port = defaults.PORT.value()
    admin_port = defaults.ADMIN_PORT.value()

    busy = [p for p in (port, admin_port) if port_in_use(p)]
    if busy:
        console.print(
            f"[bold red]port(s) {busy} already in use[/] (another recall server?): stop it, "
            "or choose others with RECALL_PORT / RECALL_ADMIN_PORT"
        )
        return 1

    t = _stage(console, 1, "fetch ML-100K (recbole wheel from PyPI, SHA-256 checked)")
    fetch_ml100k(data, paths.cache_dir())
    console.print(f"data directory {data} ({time.monotonic() - t:.1f} s)")

    t = _stage(console, 2, f"start Redis on 127.0.0.1:{paths.redis_port()}")
    redis = LocalRedis(paths.redis_dir(), paths.redis_port())
    started_redis = redis.start()
    server: subprocess.Popen[bytes] | None = None
    refresher: subprocess.Popen[bytes] | None = None
    try:
        console.print(f"{redis.url} ({'started' if started_redis else 'already running'})")

        t = _stage(
            console,
            3,
            "Airflow DAGs recall_train → recall_vectors → recall_index → recall_ship: train "
            "→ model gate → user vectors → index → ship",
        )
        with spinner_line(console, "Airflow is starting the DAG run…") as show:
            run = run_dag(
                "recall_train",
                {
                    "data_dir": str(data),
                    "artifact_root": artifact_root,
                    "redis_url": redis.url,
                    "epochs": epochs,
                    "min_recall": DEFAULT_MIN_RECALL,
                },
                paths.airflow_home(),
                on_progress=lambda m: show(f"Airflow: {m}"),
            )
        for part in run.chain():  # recall_train, then the runs its asset events scheduled
            console.print(f"  {part.dag_id}:")
            for task in part.tasks:
                console.print(
                    f"  {task.task_id:<20} {task.state:<8} {task.seconds:6.1f} s  "
                    f"{task.result or ''}"
                )
        if not run.succeeded:
            failed = next(part for part in run.chain() if part.state != "success")
            console.print(
                f"[bold red]pipeline {failed.dag_id} {failed.state}:[/] {failed.failure}\n"
                f"Airflow log: {run.log_path}"
            )
            return 1
        console.print(
            f"pipeline done in {time.monotonic() - t:.1f} s (Airflow log: {run.log_path})"
        )
        _print_quality(console, artifact_root)

        t = _stage(
            console, 4, f"start a recall server on :{port} (admin :{admin_port}) and the refresher"
        )
        log_path = paths.home() / "server.log"
        env = {
            **os.environ,
            "RECALL_PORT": str(port),
            "RECALL_ADMIN_PORT": str(admin_port),
            "RECALL_REDIS_URL": redis.url,
            "RECALL_ARTIFACT_ROOT": artifact_root,
            "RECALL_METRICS_PORT": "0",
        }
        with log_path.open("wb") as log:
            server = subprocess.Popen(
                [sys.executable, "-m", "recall_cli.main", "serve"], env=env, stdout=log, stderr=log
            )
        refresher_log = paths.home() / "refresher.log"
        with refresher_log.open("wb") as log:
            refresher = subprocess.Popen(
                [sys.executable, "-m", "recall_cli.main", "refresher"],
                env=env,
                stdout=log,
                stderr=log,
            )
        client = RecallClient(f"127.0.0.1:{port}", f"127.0.0.1:{admin_port}")
        deadline = time.monotonic() + 60
        while server.poll() is None and not client.is_serving() and time.monotonic() < deadline:
            time.sleep(0.2)
        if server.poll() is not None or not client.is_serving():
            errors = [line for line in log_path.read_text().splitlines() if "error" in line]
            console.print(
                f"[bold red]server did not become healthy[/]: {errors[-1] if errors else ''}"
            )
            console.print(f"server log: {log_path}")
            return 1
        console.print(f"SERVING in {time.monotonic() - t:.1f} s (log: {log_path})")
        console.print(f"refresher log: {refresher_log}")

        _stage(console, 5, "query top-10 candidates over gRPC")
        titles = load_dataset(data).item_titles()
        for user in DEMO_USERS:
            console.print(candidates_table(user, client.recall(user, 10), titles))

        _stage(console, 6, "fresh vectors: interactions in → refresher → new candidates")
        assert refresher is not None
        consumer = f"{socket.gethostname()}-{refresher.pid}"
        fresh = _fresh_vectors(console, client, redis.url, titles, consumer)
        client.close()
        if not fresh:
            console.print(f"refresher log: {refresher_log}")
            return 1
        console.print(f"[bold green]demo finished in {time.monotonic() - began:.0f} s[/]")
        return 0
    finally:
        _stop(refresher)
        _stop(server)
        if started_redis:
            try:
                redis.stop()
            except LocalRedisError as exc:
                console.print(f"[bold red]{exc}[/]")
        console.print("stopped the refresher, the recall server and Redis")
