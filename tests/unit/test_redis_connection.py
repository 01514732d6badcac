"""keyspace.connection's client factory: which client a URL selects (single Redis or Redis
Cluster, sync or asyncio), the URL errors, and the cluster-safety rules the callers rely
on (one key per script, no MGET on a cluster). No server: a real cluster is in
tests/integration/test_redis_cluster.py."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from keyspace.connection import (
    RedisConnectionConfigError,
    RedisSecurity,
    is_cluster,
    make_client,
    parse_redis_url,
    redis_kwargs,
)
from keyspace.histories import REPLACE_HISTORY_LUA
from recall_cli.local_redis import free_port
from serving import vector_repair
from serving.user_vectors import UserVectorStore
from serving.vector_repair import VectorRepairer

NO_SECURITY = RedisSecurity()


def test_plain_urls_pass_through_unchanged() -> None:
    for url in ("redis://127.0.0.1:6390/0", "rediss://h:1/2", "unix:///tmp/r.sock"):
        endpoint = parse_redis_url(url)
        assert (endpoint.url, endpoint.cluster) == (url, False)


def test_cluster_scheme_selects_cluster_and_keeps_credentials() -> None:
    endpoint = parse_redis_url("redis+cluster://user:pw@10.0.0.5:7000")
    assert (endpoint.url, endpoint.cluster) == ("redis://user:pw@10.0.0.5:7000", True)
    endpoint = parse_redis_url("rediss+cluster://10.0.0.5:7000/0")
    assert (endpoint.url, endpoint.cluster) == ("rediss://10.0.0.5:7000", True)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+cluster://h:7000/3", "only database 0"),
        ("redis+cluster:///0", "names one of its nodes"),
        ("http://h:7000", "unknown scheme http://"),
        ("h:7000", "unknown scheme"),
    ],
)
def test_bad_urls_are_refused_with_a_clear_message(url: str, message: str) -> None:
    with pytest.raises(RedisConnectionConfigError, match=message):
        parse_redis_url(url)
    with pytest.raises(RedisConnectionConfigError, match=message):
        make_client(url, NO_SECURITY)


def test_password_never_appears_in_url_errors() -> None:
    with pytest.raises(RedisConnectionConfigError) as caught:
        parse_redis_url("redis+cluster://:s3cret@h:7000/5")
    assert "s3cret" not in str(caught.value)
    assert ":***@h:7000" in str(caught.value)


def test_tls_options_follow_the_cluster_scheme(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    security = RedisSecurity(tls_ca_file=str(ca))
    assert redis_kwargs("rediss+cluster://h:7000", security) == {"ssl_ca_certs": str(ca)}
    with pytest.raises(RedisConnectionConfigError, match="rediss\\+cluster://"):
        redis_kwargs("redis+cluster://h:7000", security)


def test_make_client_picks_the_class_by_url_and_mode() -> None:
    single = make_client("redis://127.0.0.1:1/0", NO_SECURITY, socket_timeout=1)
    assert type(single) is redis.Redis and not is_cluster(single)
    assert single.connection_pool.connection_kwargs["socket_timeout"] == 1
    single.close()

    async def build() -> tuple[object, object]:
        plain = make_client("redis://127.0.0.1:1/0", NO_SECURITY, asyncio=True)
        # The asyncio cluster client connects on its first command, not here.
        cluster = make_client("redis+cluster://127.0.0.1:1", NO_SECURITY, asyncio=True)
        await plain.aclose()
        await cluster.aclose()
        return plain, cluster

    plain, cluster = asyncio.run(build())
    assert type(plain) is aioredis.Redis and not is_cluster(plain)
    assert isinstance(cluster, aioredis.RedisCluster) and is_cluster(cluster)


def test_blocking_cluster_client_on_a_dead_port_is_a_connection_error() -> None:
    port = free_port()  # nothing listens: connection refused at once
    with pytest.raises(redis.ConnectionError, match=f"Redis Cluster .*127.0.0.1:{port}"):
        make_client(f"redis+cluster://127.0.0.1:{port}", NO_SECURITY, socket_connect_timeout=1)


def test_vector_store_never_sends_mget_to_a_cluster() -> None:
    async def stores() -> tuple[bool, bool]:
        single = UserVectorStore.from_url("redis://127.0.0.1:1/0", security=NO_SECURITY)
        cluster = UserVectorStore.from_url("redis+cluster://127.0.0.1:1", security=NO_SECURITY)
        flags = (single.multi_key_reads, cluster.multi_key_reads)
        await single.close()
        await cluster.close()
        return flags

    assert asyncio.run(stores()) == (True, False)


def test_repairer_on_a_cluster_url_connects_lazily(tmp_path: Path) -> None:
    """A recall server must start while its cluster is down: the repairer's blocking
    cluster client is made on the first check, not when the server starts."""
    from artifacts.store import ArtifactStore

    port = free_port()
    repairer = VectorRepairer.from_url(
        ArtifactStore(tmp_path), f"redis+cluster://127.0.0.1:{port}", security=NO_SECURITY
    )
    with pytest.raises(redis.ConnectionError):
        _ = repairer.client
    repairer.close()
    with pytest.raises(RedisConnectionConfigError):
        VectorRepairer.from_url(ArtifactStore(tmp_path), "redis+cluster://h/2")


def test_every_lua_script_touches_one_key() -> None:
    """Redis Cluster runs a script on the node of its keys; a second key would have to be
    in the same slot (a hash tag). Ours take exactly KEYS[1]."""
    scripts = [REPLACE_HISTORY_LUA, vector_repair._RELEASE_LUA, vector_repair._RENEW_LUA]
    for script in scripts:
        assert set(re.findall(r"KEYS\[(\w+)\]", script)) == {"1"}, script
