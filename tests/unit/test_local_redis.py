"""The project-local Redis's ownership rule and what it tells people about a foreign
server (recall_cli.local_redis); the servers themselves: tests/integration/test_redis_ops.py."""

from __future__ import annotations

from pathlib import Path

from recall_cli.local_redis import PortOccupant, is_own_server


def test_a_redis_working_in_our_directory_is_ours(tmp_path: Path) -> None:
    ours = tmp_path / "var" / "redis"
    ours.mkdir(parents=True)
    occupant = PortOccupant(6390, True, dir=str(ours.resolve()), version="7.0.15", pid=9)
    assert is_own_server(occupant, ours, pidfile_pid=None)
    assert is_own_server(occupant, tmp_path / "var" / ".." / "var" / "redis", pidfile_pid=None)


def test_a_symlinked_directory_is_compared_by_its_real_path(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    assert is_own_server(PortOccupant(6390, True, dir=str(real)), link, pidfile_pid=None)


def test_another_checkouts_redis_is_foreign_even_with_our_pid(tmp_path: Path) -> None:
    occupant = PortOccupant(6390, True, dir="/elsewhere/var/redis", pid=9)
    assert not is_own_server(occupant, tmp_path, pidfile_pid=9)


def test_a_redis_whose_directory_was_deleted_is_foreign(tmp_path: Path) -> None:
    # Redis reports dir "" when its working directory no longer exists.
    occupant = PortOccupant(6390, True, dir="", pid=9)
    assert not is_own_server(occupant, tmp_path, pidfile_pid=9)
    assert "its data directory was deleted" in occupant.describe()


def test_without_a_dir_reply_our_pid_file_decides(tmp_path: Path) -> None:
    occupant = PortOccupant(6390, True, dir=None, pid=9)
    assert is_own_server(occupant, tmp_path, pidfile_pid=9)
    assert not is_own_server(occupant, tmp_path, pidfile_pid=10)
    assert not is_own_server(occupant, tmp_path, pidfile_pid=None)


def test_a_refusing_redis_and_non_redis_are_foreign(tmp_path: Path) -> None:
    locked = PortOccupant(6390, True, error="requires a password: NOAUTH")
    other = PortOccupant(6390, False, error="Protocol error")
    assert not is_own_server(locked, tmp_path, pidfile_pid=None)
    assert not is_own_server(other, tmp_path, pidfile_pid=None)
    assert "requires a password" in locked.describe()
    assert other.describe().startswith("something that is not Redis")


def test_description_names_dir_version_and_pid() -> None:
    occupant = PortOccupant(6390, True, dir="/x/var/redis", version="7.0.15", pid=42)
    assert occupant.describe() == "a Redis (dir /x/var/redis, redis 7.0.15, pid 42)"
