"""A 20-second run of the soak benchmark (bench/soak.py; the published figures come from
the 10-minute run in bench/README.md): a real `recall serve` process and its own Redis,
mixed load, index swaps, a Redis stop and a kill -9. Growth is not judged here (20 s say
nothing about leaks); the call outcomes and the clean-up are."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.soak import SoakConfig, run
from recall_cli.local_redis import port_in_use

pytestmark = pytest.mark.integration


def test_a_short_soak_fails_no_call_and_degrades_only_during_redis_outages(
    tmp_path: Path,
) -> None:
    config = SoakConfig(
        seconds=20, sample_s=2, swap_s=4, outage_s=2, users=500, items=1682, recall_workers=4
    )
    report = run(config, tmp_path)
    tally = report.tally
    assert [o.what for o in report.outages] == ["stop", "kill -9"]
    assert not tally.failed_at, tally.failed_at[:3]
    assert not tally.swap_failures
    assert sum(s.swaps for s in report.samples) >= 3
    answered = sum(s.ok for s in report.samples)
    assert answered > 100
    # Degraded answers happened, and only inside the outages (the verdict's own check).
    assert tally.degraded_at
    growth_only = [r for r in report.reasons if "RSS grew" in r or "fds grew" in r]
    assert report.reasons == growth_only, report.reasons
    assert all(s.rss_mib > 0 and s.fds > 0 for s in report.samples)
    # Everything it started is gone: the server process, its Redis, its files.
    with pytest.raises(ProcessLookupError):
        os.kill(report.server_pid, 0)
    assert not port_in_use(report.redis_port)
    assert not list(tmp_path.glob("soak-*"))
