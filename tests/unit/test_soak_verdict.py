"""The soak benchmark's verdict (bench/soak.py ``judge``): flat only when RSS and fds stay
level over the last half, no call fails, and degraded answers fall inside Redis outages."""

from __future__ import annotations

from bench.soak import Outage, Sample, SoakConfig, Tally, judge

CONFIG = SoakConfig(seconds=100, sample_s=10)
OUTAGES = [Outage("stop", 40.0, 45.0), Outage("kill -9", 65.0, 70.0)]


def samples(rss: list[float], fds: list[int] | None = None) -> list[Sample]:
    fds = fds or [20] * len(rss)
    return [
        Sample(
            t=10.0 * (i + 1),
            rss_mib=r,
            fds=f,
            ok=100,
            degraded=0,
            failed={},
            writes_ok=10,
            writes_failed=0,
            p50_ms=1.0,
            p99_ms=2.0,
            swaps=0,
            redis_up=True,
        )
        for i, (r, f) in enumerate(zip(rss, fds, strict=True))
    ]


LEVEL = [100.0, 101, 100, 102, 101, 100, 103, 101, 100, 101]


def test_level_rss_and_degraded_answers_inside_outages_are_flat() -> None:
    tally = Tally(degraded_at=[41.0, 44.9, 46.5, 66.0], write_failed_at=[(42.0, "UNAVAILABLE")])
    report = judge(CONFIG, samples(LEVEL), OUTAGES, tally)
    assert report.flat, report.reasons
    assert abs(report.rss_growth) < 0.02


def test_rss_growing_over_the_last_half_is_not_flat() -> None:
    growing = [100.0, 101, 102, 103, 104, 105, 108, 110, 112, 115]
    report = judge(CONFIG, samples(growing), OUTAGES, Tally())
    assert not report.flat
    assert any("RSS grew" in r for r in report.reasons)


def test_leaking_fds_are_not_flat() -> None:
    report = judge(
        CONFIG, samples(LEVEL, [20, 20, 21, 20, 22, 25, 28, 31, 34, 40]), OUTAGES, Tally()
    )
    assert any("fds grew" in r for r in report.reasons)


def test_failed_calls_and_stray_degraded_answers_are_not_flat() -> None:
    tally = Tally(
        failed_at=[(50.0, "Recall:UNAVAILABLE: boom")],
        degraded_at=[20.0],
        write_failed_at=[(80.0, "UNAVAILABLE")],
        known_fallback_at=[30.0, 100.0],  # 100 s is within the repair's 60 s of an outage
    )
    reasons = judge(CONFIG, samples(LEVEL), OUTAGES, tally).reasons
    assert any("1 failed calls" in r for r in reasons)
    assert any("degraded answers outside an outage" in r for r in reasons)
    assert any("failed writes outside an outage" in r for r in reasons)
    assert any("1 known users answered from the popular items" in r for r in reasons)


def test_a_run_without_its_faults_or_too_short_is_not_flat() -> None:
    assert any("of 2 Redis faults" in r for r in judge(CONFIG, samples(LEVEL), [], Tally()).reasons)
    assert any(
        "too short" in r for r in judge(CONFIG, samples(LEVEL[:3]), OUTAGES, Tally()).reasons
    )
