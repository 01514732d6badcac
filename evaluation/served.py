"""The served path: the model's answers through the real product, over gRPC.

User vectors go into a real Redis (``serving.tasks.load_vectors``), an IVF-PQ index is
built and published (``serving.tasks.build_index``), a real :class:`RecallServer` serves
it on OS-chosen loopback ports, and every test user is asked for ``k`` candidates with the
masked items as ``exclude_item_ids`` (``BatchRecall`` in chunks). Answers marked
``SOURCE_FALLBACK`` count as they are. The Redis (started here unless a URL is given) and
the server are always stopped, whatever fails.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from artifacts.checksums import MANIFEST_NAME
from artifacts.store import open_uri
from recall_cli.local_redis import LocalRedis, free_port
from serving import tasks
from serving.api.recall.v1 import recall_pb2
from serving.client import RecallClient
from serving.config import ServerSettings
from serving.index.artifact import IndexManifest
from serving.server import RecallServer

BATCH_USERS = 500
"""Users per BatchRecall call (the server's default ``max_batch`` is 1,000)."""
RPC_TIMEOUT_S = 60.0

ProgressFn = Callable[[int, int], None]
"""Called with (users answered, users in all)."""


@dataclass(frozen=True)
class ServedAnswers:
    """What the server returned, one entry per asked user (same order)."""

    ranked: list[list[str]]  # candidate item ids, best first
    sources: list[str]  # "SOURCE_USER_VECTOR" / "SOURCE_FALLBACK" per user
    index_version: str
    index: IndexManifest  # factory, nprobe, measured ANN recall@10 vs exact
    seconds: float  # wall time of the Recall calls alone

    def source_counts(self) -> dict[str, int]:
        return dict(Counter(self.sources))


class _ServerThread:
    """A RecallServer on its own event loop in a daemon thread."""

    def __init__(self, settings: ServerSettings) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server = RecallServer(settings)

    def start(self) -> int:
        """Start serving; returns the bound RecallService port."""
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(120)
        return self.server.port

    def stop(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.server.stop(0), self.loop).result(30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


@contextmanager
def _redis(work_dir: Path, redis_url: str | None) -> Iterator[str]:
    """``redis_url`` as is, or a throwaway LocalRedis (no persistence) under ``work_dir``."""
    if redis_url is not None:
        yield redis_url
        return
    directory = work_dir / "redis"
    server = LocalRedis(directory, free_port(), persist=False)
    try:
        server.start()
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def recall_through_server(
    model_uri: str,
    artifact_root: str,
    users: Sequence[str],
    exclude: Sequence[Sequence[str]],
    k: int,
    work_dir: Path,
    *,
    min_recall: float = 0.0,
    redis_url: str | None = None,
    on_progress: ProgressFn | None = None,
) -> ServedAnswers:
    """Serve the model at ``model_uri`` and ask for ``k`` candidates for each of ``users``.

    Args:
        artifact_root: the store holding the model; the index is published beside it.
        exclude: per user, the item ids to pass as ``exclude_item_ids``.
        min_recall: the index build's quality gate (0 = measure only, never refuse).
        redis_url: an existing Redis to use; default: start one on a free port.
    """
    index_uri = tasks.build_index(model_uri, min_recall=min_recall)
    index = IndexManifest.model_validate_json((open_uri(index_uri) / MANIFEST_NAME).read_text())
    with _redis(work_dir, redis_url) as url:
        tasks.load_vectors(model_uri, url)
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": 0,
            "admin_port": 0,
            "metrics_port": 0,
            "redis_url": url,
            "redis_timeout_s": 5.0,
            "artifact_root": artifact_root,
            "cache_dir": str(work_dir / "cache"),
            "index_version": index.index_version,
            "watch_interval_s": 0,
        }
        settings = ServerSettings(**values)
        server = _ServerThread(settings)
        try:
            port = server.start()
            client = RecallClient(f"127.0.0.1:{port}", timeout_s=RPC_TIMEOUT_S)
            try:
                started = time.perf_counter()
                ranked, sources = _ask(client, users, exclude, k, on_progress)
                seconds = time.perf_counter() - started
            finally:
                client.close()
        finally:
            server.stop()
    return ServedAnswers(ranked, sources, index.index_version, index, seconds)


def _ask(
    client: RecallClient,
    users: Sequence[str],
    exclude: Sequence[Sequence[str]],
    k: int,
    on_progress: ProgressFn | None,
) -> tuple[list[list[str]], list[str]]:
    """BatchRecall for every user in chunks: (candidate ids per user, source per user)."""
    ranked: list[list[str]] = []
    sources: list[str] = []
    for s in range(0, len(users), BATCH_USERS):
        requests = [
            recall_pb2.RecallRequest(user_id=u, k=k, exclude_item_ids=list(ex))
            for u, ex in zip(users[s : s + BATCH_USERS], exclude[s : s + BATCH_USERS], strict=True)
        ]
        for reply in client.batch_recall(requests).responses:
            ranked.append([c.item_id for c in reply.candidates])
            sources.append(recall_pb2.Source.Name(reply.source))
        if on_progress:
            on_progress(len(ranked), len(users))
    return ranked, sources
