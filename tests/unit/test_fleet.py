"""serving.fleet's pure parts: RECALL_FLEET parsing (DNS expansion with a fake resolver),
canary choice, skew, and the ship task's no-op paths (a real local store, no servers)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from artifacts.store import ArtifactStore
from serving.fleet import (
    FleetConfigError,
    FleetSettings,
    MemberStatus,
    parse_fleet,
    pick_canary,
    ship,
    ship_published,
    skew,
)


def fake_resolver(table: dict[str, list[str]]) -> Callable[[str, int], list[str]]:
    def resolve(host: str, port: int) -> list[str]:
        return table[host]

    return resolve


def test_fleet_lists_literal_addresses_in_order_without_duplicates() -> None:
    spec = " 10.0.0.1:50052,10.0.0.2:50052 ,,10.0.0.1:50052,[::1]:7000"
    assert parse_fleet(spec, fake_resolver({})) == [
        "10.0.0.1:50052",
        "10.0.0.2:50052",
        "[::1]:7000",
    ]


def test_a_name_with_several_addresses_stands_for_all_of_them() -> None:
    resolve = fake_resolver(
        {
            "recall-admin.recall.svc": ["10.1.0.7", "10.1.0.8", "10.1.0.9"],
            "canary.local": ["10.2.0.1"],
        }
    )
    assert parse_fleet("canary.local:50052,recall-admin.recall.svc:50052", resolve) == [
        "canary.local:50052",  # one address: kept as written (readable in status)
        "10.1.0.7:50052",
        "10.1.0.8:50052",
        "10.1.0.9:50052",
    ]


def test_localhost_resolves_for_real_and_stays_one_member() -> None:
    assert parse_fleet("localhost:50052") == ["localhost:50052"]


@pytest.mark.parametrize("bad", ["10.0.0.1", "host:", ":50052", "host:99999", "host:port"])
def test_malformed_members_are_config_errors(bad: str) -> None:
    with pytest.raises(FleetConfigError, match="not host:port"):
        parse_fleet(bad, fake_resolver({}))


def test_an_unresolvable_name_is_a_config_error() -> None:
    with pytest.raises(FleetConfigError, match="does not resolve"):
        parse_fleet("no-such-host.invalid:50052")


def test_canary_by_count_or_by_name() -> None:
    members = ["a:1", "b:1", "c:1"]
    assert pick_canary(members, "1") == ["a:1"]
    assert pick_canary(members, "") == ["a:1"]
    assert pick_canary(members, "2") == ["a:1", "b:1"]
    assert pick_canary(members, "9") == members
    assert pick_canary(members, "c:1") == ["c:1"]
    assert pick_canary(members, "c:1, b:1") == ["c:1", "b:1"]
    with pytest.raises(FleetConfigError, match="not in the fleet"):
        pick_canary(members, "d:1")
    with pytest.raises(FleetConfigError, match="at least 1"):
        pick_canary(members, "0")


def test_skew_counts_distinct_versions_of_answering_members() -> None:
    same = [MemberStatus("a:1", "v2"), MemberStatus("b:1", "v2"), MemberStatus("c:1", error="x")]
    assert skew(same) == ["v2"]
    assert skew([*same, MemberStatus("d:1", "v1")]) == ["v1", "v2"]


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECALL_FLEET", "a:1,b:1")
    monkeypatch.setenv("RECALL_FLEET_CANARY", "b:1")
    monkeypatch.setenv("RECALL_FLEET_CANARY_WATCH_S", "0.5")
    settings = FleetSettings()
    assert (settings.fleet, settings.fleet_canary, settings.fleet_canary_watch_s) == (
        "a:1,b:1",
        "b:1",
        0.5,
    )


def publish_dir(tmp_path: Path, name: str) -> Path:
    d = tmp_path / "src" / name
    d.mkdir(parents=True)
    (d / "manifest.json").write_text("{}")
    return d


def test_ship_task_without_a_fleet_is_a_no_op_that_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = ArtifactStore(tmp_path / "store")
    uri = store.publish("indexes", "v1", publish_dir(tmp_path, "v1"))
    with caplog.at_level(logging.INFO, logger="serving.fleet"):
        outcome = ship_published(uri, FleetSettings(fleet=""))
    assert "no fleet configured" in outcome
    assert "no fleet configured" in caplog.text


def test_ship_task_under_a_pin_publishes_but_does_not_ship(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = ArtifactStore(tmp_path / "store")
    store.publish("indexes", "v1", publish_dir(tmp_path, "v1"))
    uri = store.publish("indexes", "v2", publish_dir(tmp_path, "v2"), set_latest=False)
    store.pin("indexes", "v1", reason="v2 regressed", by="oncall")
    # The members do not exist: a ship attempt would fail, so a pass proves it was skipped.
    with caplog.at_level(logging.WARNING, logger="serving.fleet"):
        outcome = ship_published(uri, FleetSettings(fleet="127.0.0.1:1"))
    assert "pinned to v1 by oncall" in outcome and "v2 regressed" in outcome
    assert "not shipping index v2" in caplog.text
    assert store.latest("indexes") == "v1"


def test_ship_refuses_an_empty_fleet_and_a_foreign_canary(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    with pytest.raises(FleetConfigError, match="no fleet members"):
        ship(store, "v1", [], [])
    with pytest.raises(FleetConfigError, match="not in the fleet"):
        ship(store, "v1", ["a:1"], ["b:1"])


def test_unreadable_client_credentials_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(FleetConfigError, match="cannot read token file"):
        FleetSettings(admin_token_file=str(tmp_path / "absent")).client_security()
    (tmp_path / "token").write_text("s3cret\n")
    security = FleetSettings(admin_token_file=str(tmp_path / "token")).client_security()
    assert security.admin_token == "s3cret" and not security.uses_tls
