"""RecordInteractions: validate interactions, drop items the serving index does not know,
append the rest to the users' histories and tell the refresher, in one Redis round trip.

Transport-free like ``serving.recall_engine``: the servicer converts messages and maps
errors to status codes. Key formats: ``keyspace.histories`` and ``keyspace.events``.

Delivery is at-least-once: a write that fails part-way (Redis went away mid-pipeline) is
retried whole, so a history may then hold an interaction twice, but none is lost silently:
the call either succeeds or fails with UNAVAILABLE after ``retry_s``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Container, Sequence
from dataclasses import dataclass

from keyspace.connection import REDIS_ERRORS, AsyncRedis
from keyspace.events import UserEvent, queue_user_event
from keyspace.histories import queue_history_append
from serving.errors import BackendUnavailable, InvalidRequest
from serving.index_holder import IndexHolder
from serving.metrics import INTERACTIONS, REDIS_WRITE_RETRIES
from serving.model_artifact import CanonicalMaps

log = logging.getLogger(__name__)

MAX_ID_BYTES = 512
"""Longer user or item ids are refused (they would only make oversized Redis keys/values)."""
MAX_FUTURE_S = 86_400
"""Timestamps more than this far past the server's clock are refused (a clock or unit bug,
e.g. milliseconds sent as seconds)."""
UNKNOWN_IDS_REPORTED = 10
"""How many distinct unknown item ids a reply names."""


@dataclass(frozen=True)
class Interaction:
    user_id: str
    item_id: str
    timestamp: int  # Unix seconds; 0 = when the server receives it


@dataclass(frozen=True)
class RecordOutcome:
    accepted: int
    unknown_items: int
    unknown_item_ids: list[str]


def _check_id(value: str, field: str) -> None:
    if not value:
        raise InvalidRequest(f"{field} is required")
    if len(value.encode()) > MAX_ID_BYTES:
        raise InvalidRequest(f"{field} is longer than {MAX_ID_BYTES} bytes")


def validate_interactions(
    interactions: Sequence[Interaction], max_per_call: int, now: float
) -> list[Interaction]:
    """The interactions with timestamp 0 replaced by ``now`` (truncated to seconds).

    Raises:
        InvalidRequest: none, or more than ``max_per_call``; an empty or over-long id; a
            negative timestamp or one more than MAX_FUTURE_S ahead of ``now``. The message
            names the field, e.g. ``interactions[3].item_id``.
    """
    if not interactions:
        raise InvalidRequest("interactions: at least one is required")
    if len(interactions) > max_per_call:
        raise InvalidRequest(
            f"interactions: at most {max_per_call} per call, got {len(interactions)}"
        )
    checked = []
    for i, event in enumerate(interactions):
        _check_id(event.user_id, f"interactions[{i}].user_id")
        _check_id(event.item_id, f"interactions[{i}].item_id")
        if event.timestamp < 0 or event.timestamp > now + MAX_FUTURE_S:
            raise InvalidRequest(
                f"interactions[{i}].timestamp {event.timestamp} is not a time in Unix seconds "
                f"(0 = now; at most one day ahead of the server's clock, {int(now)})"
            )
        checked.append(Interaction(event.user_id, event.item_id, event.timestamp or int(now)))
    return checked


def plan_writes(
    interactions: Sequence[Interaction], known_items: Container[str]
) -> tuple[dict[str, list[str]], dict[str, int], RecordOutcome]:
    """Split off unknown items and group the rest by user.

    Returns:
        (user → item ids oldest first (stable for equal timestamps), user → newest
        timestamp, outcome counts). Users all of whose items are unknown do not appear.
    """
    per_user: dict[str, list[Interaction]] = {}
    unknown: list[str] = []
    for event in interactions:
        if event.item_id in known_items:
            per_user.setdefault(event.user_id, []).append(event)
        else:
            unknown.append(event.item_id)
    items = {
        user: [e.item_id for e in sorted(events, key=lambda e: e.timestamp)]
        for user, events in per_user.items()
    }
    newest = {user: max(e.timestamp for e in events) for user, events in per_user.items()}
    outcome = RecordOutcome(
        accepted=len(interactions) - len(unknown),
        unknown_items=len(unknown),
        unknown_item_ids=list(dict.fromkeys(unknown))[:UNKNOWN_IDS_REPORTED],
    )
    return items, newest, outcome


class InteractionRecorder:
    """Records interactions for one server; shares the server's async Redis client."""

    def __init__(
        self,
        holder: IndexHolder,
        client: AsyncRedis,
        *,
        max_per_call: int,
        history_cap: int,
        events_maxlen: int,
        retry_s: float,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        canonical_maps: CanonicalMaps | None = None,
    ) -> None:
        """``canonical_maps``: the serving model's duplicate maps (the recall engine's), so
        an interaction with any copy of a duplicate item is recorded under its canonical
        id, the only one the index and the user tower know."""
        self.canonical_maps = canonical_maps
        self.holder = holder
        self.client = client
        self.max_per_call = max_per_call
        self.history_cap = history_cap
        self.events_maxlen = events_maxlen
        self.retry_s = retry_s
        self.clock = clock
        self.sleep = sleep

    async def record(self, interactions: Sequence[Interaction]) -> RecordOutcome:
        """Validate, drop unknown items, write the rest (see the module docstring).

        Raises:
            InvalidRequest: malformed or oversized input (nothing is written).
            NoIndexLoaded: no serving index yet, so no item can be checked.
            BackendUnavailable: Redis stayed unreachable for ``retry_s``.
        """
        now = self.clock()
        checked = validate_interactions(interactions, self.max_per_call, now)
        loaded = self.holder.current()
        if self.canonical_maps is not None:
            canonical = await self.canonical_maps.for_model(loaded.model_version)
            if canonical.groups:
                checked = [
                    dataclasses.replace(e, item_id=canonical.canonical(e.item_id)) for e in checked
                ]
        items, newest, outcome = plan_writes(checked, loaded.internal_ids)
        if items:
            await self._write(items, newest, now)
        INTERACTIONS.labels("accepted").inc(outcome.accepted)
        INTERACTIONS.labels("unknown_item").inc(outcome.unknown_items)
        return outcome

    async def _write(
        self, items: dict[str, list[str]], newest: dict[str, int], received_at: float
    ) -> None:
        """One non-transactional pipeline: per user LPUSH + LTRIM of the history, XADD to the
        event stream, ZADD to the touched set. Retried with backoff for ``retry_s``.
        Every command names one key, so on a Redis Cluster the pipeline splits by node."""
        started = time.monotonic()
        delay = 0.05
        while True:
            try:
                pipe = self.client.pipeline(transaction=False)
                for user, user_items in items.items():
                    queue_history_append(pipe, user, user_items, self.history_cap)
                    event = UserEvent(user, len(user_items), newest[user])
                    queue_user_event(pipe, event, received_at, self.events_maxlen)
                await pipe.execute()
                return
            except REDIS_ERRORS as exc:
                elapsed = time.monotonic() - started
                if elapsed + delay > self.retry_s:
                    count = sum(len(v) for v in items.values())
                    raise BackendUnavailable(
                        f"Redis unavailable for {elapsed:.1f} s; {count} interaction(s) of "
                        f"{len(items)} user(s) not recorded, retry the call: {exc}"
                    ) from exc
                REDIS_WRITE_RETRIES.inc()
                log.warning("recording interactions: Redis error (%s); retrying", exc)
                await self.sleep(delay)
                delay = min(delay * 2, 0.5)
