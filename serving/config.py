"""Recall server settings: one typed object, read from ``RECALL_*`` environment variables
(or a YAML file named by ``RECALL_CONFIG``), validated at start."""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from keyspace.connection import RedisSecurity
from keyspace.events import EVENTS_MAXLEN
from recall_settings import defaults


def _home(*parts: str) -> str:
    """A path under ``$RECALL_HOME`` (default ``var``), where the CLI keeps local state."""
    return str(defaults.recall_home().joinpath(*parts))


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RECALL_", extra="forbid")

    host: str = Field(
        defaults.HOST.default, description="Interface to bind; 0.0.0.0 in containers."
    )
    port: int = Field(
        defaults.PORT.default,
        ge=0,
        le=65535,
        description="RecallService + health + reflection (0: any free port).",
    )
    admin_port: int = Field(
        defaults.ADMIN_PORT.default,
        ge=0,
        le=65535,
        description="RecallAdmin port (0: any free port).",
    )
    metrics_port: int = Field(
        defaults.METRICS_PORT.default,
        ge=0,
        le=65535,
        description="Prometheus /metrics HTTP port; 0 disables.",
    )
    redis_url: str = Field(
        default_factory=defaults.default_redis_url,
        description=(
            "Where user vectors live (default: the project-local Redis); "
            "redis+cluster://host:port (rediss+cluster:// for TLS) for a Redis Cluster."
        ),
    )
    redis_timeout_s: float = Field(0.5, gt=0, description="Per-command Redis socket timeout.")
    artifact_root: str = Field(
        default_factory=lambda: defaults.ARTIFACT_ROOT.default_in(),
        description="Artifact store root (path or fsspec URL); default $RECALL_HOME/artifacts.",
    )
    cache_dir: str = Field(
        default_factory=lambda: _home("cache", "artifacts"),
        description="Local copy of remote artifacts; default $RECALL_HOME/cache/artifacts.",
    )
    trusted_keys_dir: str | None = Field(
        None,
        description=(
            "Directory of Ed25519 public keys (*.pub/*.pem, one per file) whose manifest "
            "signatures this server accepts; with it, unsigned or mis-signed indexes and "
            "models are refused (FAILED_PRECONDITION). Unset: no signature check."
        ),
    )
    index_version: str | None = Field(
        None, description="Index version to serve; unset = the store's LATEST."
    )
    watch_interval_s: float = Field(
        30.0, ge=0, description="Poll LATEST this often and hot-swap to a new index; 0 disables."
    )
    max_k: int = Field(1000, ge=1, le=100_000, description="Largest k a request may ask for.")
    max_batch: int = Field(1000, ge=1, description="Most requests in one BatchRecall.")
    nprobe: int | None = Field(
        None, ge=1, description="IVF lists probed per query; unset = the index manifest's."
    )
    faiss_threads: int = Field(1, ge=1, description="OpenMP threads per Faiss search.")
    grace_s: float = Field(5.0, ge=0, description="Graceful-shutdown grace period.")
    max_interactions: int = Field(
        1000, ge=1, le=100_000, description="Most interactions in one RecordInteractions call."
    )
    history_max_items: int = Field(
        defaults.HISTORY_MAX_ITEMS.default,
        ge=1,
        description="Cap of each user's history list in Redis (recall:hist:<user_id>).",
    )
    events_maxlen: int = Field(
        EVENTS_MAXLEN, ge=1, description="Approximate length cap of the recall:events stream."
    )
    redis_retry_s: float = Field(
        2.0,
        ge=0,
        description="RecordInteractions retries Redis writes this long before UNAVAILABLE.",
    )
    redis_failure_mode: Literal["fallback", "unavailable"] = Field(
        "fallback",
        description=(
            "What Recall answers when Redis fails or times out: the popular items marked "
            "SOURCE_FALLBACK_DEGRADED (fallback), or UNAVAILABLE. Writes never degrade."
        ),
    )
    redis_multi_key_reads: bool = Field(
        True,
        description=(
            "Read a batch's user vectors with one MGET; off: a GET each in the same "
            "pipeline (always so on a redis+cluster:// URL)."
        ),
    )
    redis_health_check_s: float = Field(
        10.0,
        ge=0,
        description="PING a pooled Redis connection idle this long before reusing it; 0: never.",
    )
    vector_repair_interval_s: float = Field(
        15.0,
        ge=0,
        description=(
            "Check this often that the serving model's user vectors are complete in Redis "
            "and reload the missing ones from the model artifact (serving/vector_repair.py); "
            "0 disables."
        ),
    )
    breaker_failures: int = Field(
        3, ge=1, description="Consecutive failed Redis reads that open the circuit breaker."
    )
    breaker_reset_s: float = Field(
        0.25,
        gt=0,
        description=(
            "How long an open breaker serves degraded answers without asking Redis before "
            "one probe read (half-open)."
        ),
    )
    batching: bool = Field(
        True,
        description=(
            "Coalesce concurrent Recall calls into one Redis round trip and one Faiss "
            "search (on|off)."
        ),
    )
    batch_wait_ms: float = Field(
        1.0,
        ge=0,
        le=1000,
        description=(
            "Longest a Recall call waits for others to share its batch while a batch runs "
            "(while none runs, a call goes at the next event-loop turn; while "
            "RECALL_BATCH_MAX_RUNNING run, until one finishes)."
        ),
    )
    batch_idle_wait_ms: float = Field(
        0.0,
        ge=0,
        le=1000,
        description=(
            "While no batch runs, how long a Recall call waits for others before its batch "
            "goes (0: at the next event-loop turn). 1 ms measured +7-31 % QPS at 32 calls "
            "in flight on a quiet machine, none on a contended one, and adds up to 1 ms to "
            "a lone call (bench/README.md)."
        ),
    )
    batch_max: int = Field(64, ge=1, le=10_000, description="Most Recall calls in one batch.")
    batch_max_running: int = Field(
        2,
        ge=0,
        le=1024,
        description=(
            "Most Recall batches served at once (0: no limit); calls that arrive while "
            "that many run wait and go together when one finishes. Two let one batch read "
            "Redis and encode while the other searches (bench/README.md). An index that "
            "is cheap to search (RECALL_CHEAP_SEARCH_CODES) runs one."
        ),
    )
    search_threads: int = Field(
        1,
        ge=1,
        le=256,
        description=(
            "Threads that run the searches that leave the event loop (all but a lone "
            "call's cheap one, RECALL_INLINE_SEARCH_CODES), each with RECALL_FAISS_THREADS "
            "OpenMP threads."
        ),
    )
    max_in_flight: int = Field(
        512,
        ge=1,
        description="Recall/BatchRecall calls served at once; more get RESOURCE_EXHAUSTED.",
    )
    max_nprobe: int = Field(
        1024, ge=1, description="Largest per-request nprobe (RecallRequest.nprobe)."
    )
    max_refine_factor: int = Field(
        64, ge=1, description="Largest per-request refine_factor (RecallRequest.refine_factor)."
    )
    inline_search_codes: int = Field(
        0,
        ge=0,
        description=(
            "Searches expected to scan at most this many PQ codes (queries × nprobe × "
            "items/nlist) run on the event loop instead of a search thread; 0 (default): "
            "none by this rule. Under load a search thread lets the loop take in the next "
            "calls (+10-45 % QPS on the demo index at 8-64 in flight, bench/README.md); a "
            "cheap search (RECALL_CHEAP_SEARCH_CODES) whose calls are all the server is "
            "serving still runs on the loop, sparing a lone call the thread hop."
        ),
    )
    cheap_search_codes: int = Field(
        20_000,
        ge=0,
        description=(
            "An index whose one query scans at most this many PQ codes at the served "
            "nprobe (nprobe × items/nlist) is cheap to search: then one Recall batch runs "
            "at a time, whatever RECALL_BATCH_MAX_RUNNING says, so calls pile into larger "
            "batches (+10-45 % QPS on the demo index at 8-64 in flight); 0: never."
        ),
    )
    event_loop: Literal["asyncio", "uvloop"] = Field(
        "asyncio",
        description=(
            "Event loop of `recall serve` (uvloop: installed, but no consistent gain with "
            "grpc.aio measured here; see bench/README.md)."
        ),
    )
    workers: int = Field(
        1,
        ge=1,
        le=256,
        description=(
            "Server processes of `recall serve` sharing the recall port (SO_REUSEPORT); "
            "worker 0 serves the admin port and fans LoadIndex/GetStatus out to the others, "
            "worker i serves /metrics on metrics_port + i (serving/workers.py)."
        ),
    )
    tls_cert_file: str | None = Field(
        None,
        description=(
            "PEM server certificate (chain) for TLS on the recall and admin ports; needs "
            "tls_key_file. Unset: plaintext (local default)."
        ),
    )
    tls_key_file: str | None = Field(
        None, description="PEM private key of tls_cert_file (keep it readable by the server only)."
    )
    tls_client_ca_file: str | None = Field(
        None,
        description=(
            "PEM CA bundle for mTLS: every client must present a certificate it signed; "
            "such a certificate also admits RecallAdmin calls. Needs tls_cert_file."
        ),
    )
    admin_token_file: str | None = Field(
        None,
        description=(
            "File of bearer tokens (one per line) that RecallAdmin calls must carry as "
            "`authorization: Bearer <token>`; re-read when it changes (rotation)."
        ),
    )
    service_token_file: str | None = Field(
        None,
        description=(
            "Like admin_token_file, for RecallService (rankers); unset: no token needed. "
            "Health and reflection stay open."
        ),
    )
    metrics_host: str = Field(
        "127.0.0.1",
        description="Interface of the /metrics HTTP port; 0.0.0.0 in containers (scrapers).",
    )
    redis_password_file: str | None = Field(
        None, description="File holding the Redis password (AUTH/ACL); not with a URL password."
    )
    redis_password: SecretStr | None = Field(
        None, description="The Redis password itself (prefer redis_password_file)."
    )
    redis_username: str | None = Field(None, description="Redis ACL user (default: `default`).")
    redis_tls_ca_file: str | None = Field(
        None, description="CA of the Redis server's certificate (rediss:// URLs only)."
    )
    redis_tls_cert_file: str | None = Field(
        None, description="Client certificate for a Redis with tls-auth-clients (rediss://)."
    )
    redis_tls_key_file: str | None = Field(None, description="Key of redis_tls_cert_file.")

    # Fresh items and takedowns (serving.fresh_segment, serving.new_items).
    fresh_poll_s: float = Field(
        1.0,
        gt=0,
        description=(
            "How often the server polls Redis for fresh item vectors and the deny set "
            "(seconds); an added or removed item reaches answers within about this long."
        ),
    )
    fresh_max_items: int = Field(
        50_000, ge=1, description="Most fresh items one server searches exactly (the rest wait)."
    )
    max_upsert_items: int = Field(
        1000, ge=1, description="Most items (or ids) per UpsertItems/RemoveItems call."
    )

    @model_validator(mode="after")
    def _check_security_files(self) -> ServerSettings:
        """Refuse half a TLS setup or a missing file at start, naming the setting."""
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError(
                "RECALL_TLS_CERT_FILE and RECALL_TLS_KEY_FILE go together: set both for TLS, "
                "or neither for plaintext"
            )
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise ValueError(
                "RECALL_TLS_CLIENT_CA_FILE (mTLS) needs RECALL_TLS_CERT_FILE and "
                "RECALL_TLS_KEY_FILE (the server's own certificate)"
            )
        files = {
            "RECALL_TLS_CERT_FILE": self.tls_cert_file,
            "RECALL_TLS_KEY_FILE": self.tls_key_file,
            "RECALL_TLS_CLIENT_CA_FILE": self.tls_client_ca_file,
            "RECALL_ADMIN_TOKEN_FILE": self.admin_token_file,
            "RECALL_SERVICE_TOKEN_FILE": self.service_token_file,
            "RECALL_REDIS_PASSWORD_FILE": self.redis_password_file,
            "RECALL_REDIS_TLS_CA_FILE": self.redis_tls_ca_file,
            "RECALL_REDIS_TLS_CERT_FILE": self.redis_tls_cert_file,
            "RECALL_REDIS_TLS_KEY_FILE": self.redis_tls_key_file,
        }
        for setting, path in files.items():
            if path and not os.path.isfile(path):
                raise ValueError(f"{setting}={path}: no such file")
        return self

    def redis_security(self) -> RedisSecurity:
        """The Redis password/TLS settings for ``keyspace.connection.redis_kwargs``."""
        return RedisSecurity(
            password_file=self.redis_password_file,
            password=self.redis_password.get_secret_value() if self.redis_password else None,
            username=self.redis_username,
            tls_ca_file=self.redis_tls_ca_file,
            tls_cert_file=self.redis_tls_cert_file,
            tls_key_file=self.redis_tls_key_file,
        )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Precedence: explicit arguments > ``RECALL_*`` env > YAML in ``$RECALL_CONFIG``."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("RECALL_CONFIG")
        if config_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)


def load_settings(**overrides: Any) -> ServerSettings:
    """Settings with ``overrides`` (None values ignored) on top of env and YAML."""
    return ServerSettings(**{k: v for k, v in overrides.items() if v is not None})
