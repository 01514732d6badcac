"""`recall items duplicates`: the duplicate item groups of a model artifact (what training
merged) or of a data directory (what training would merge), each with its reason.

`recall items add|remove`: catalogue changes between index builds, sent to a running
server's RecallAdmin (UpsertItems / RemoveItems); every server of the fleet picks them up
from Redis within a poll (serving/fresh_segment.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.table import Table

from recall_cli import paths
from recall_cli.output import ArtifactRoot, console, err, friendly_errors
from recall_cli.serving_commands import (
    AdminPort,
    AdminTokenFile,
    Port,
    TlsCa,
    TlsCert,
    TlsKey,
    TlsServerName,
    UseTls,
    admin_client,
)
from recall_settings import defaults

items_app = typer.Typer(
    help="The item catalogue: add and take down items, duplicate groups.", no_args_is_help=True
)
UPSERT_CHUNK = 1000
"""Items per UpsertItems call (the server's default RECALL_MAX_UPSERT_ITEMS)."""


def _titles(data_dir: Path) -> dict[str, str]:
    """item_id → title of ``data_dir``'s items table ({} when there is none)."""
    from training.data.schema import DataFormatError, find_table, load_dataset

    if find_table(data_dir, "items") is None:
        return {}
    try:
        return load_dataset(data_dir).item_titles()
    except DataFormatError:
        return {}


def _fail(message: str) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(1)


@items_app.command("duplicates")
@friendly_errors
def duplicates(
    model: Annotated[
        str | None,
        typer.Option(help="Model version whose duplicates.json to list. Default: LATEST."),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(help="Detect in this data directory instead (no model needed)."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="YAML of DuplicateConfig fields (catalogue/config.py); with --data."),
    ] = None,
    method: Annotated[str | None, typer.Option(help="minhash or simhash (with --data).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the map as JSON.")] = False,
    artifact_root: ArtifactRoot = paths.default_artifact_root(),
) -> None:
    """List duplicate item groups: canonical id, the ids folded into it, and why."""
    from catalogue.canonical_map import CanonicalMap, CanonicalMapError

    if model is not None and data is not None:
        _fail("give --model or --data, not both")
    if data is None and (config is not None or method is not None):
        _fail("--config and --method apply to detection, i.e. with --data")
    canonical: CanonicalMap
    titles: dict[str, str] = {}
    if data is not None:
        from catalogue.config import read_duplicate_config
        from catalogue.duplicates import DuplicateInputError, find_duplicates
        from training.data.schema import load_dataset

        try:
            settings = read_duplicate_config(config, {"method": method})
        except (OSError, ValueError) as exc:
            _fail(f"duplicates config: {exc}")
        dataset = load_dataset(data)
        if dataset.items is None:
            _fail(f"{data}: no items table (items.parquet or items.csv) to compare")
        assert dataset.items is not None
        try:
            canonical = find_duplicates(dataset.items, settings, dataset.interactions)
        except DuplicateInputError as exc:
            _fail(f"{data}: {exc}")
        source = str(data)
        titles = dataset.item_titles()
    else:
        from artifacts.store import ArtifactStore
        from serving.model_artifact import MODEL_KIND, open_model_artifact

        store = ArtifactStore(artifact_root)
        version = store.resolve(MODEL_KIND, model)
        artifact = open_model_artifact(store.local_dir(MODEL_KIND, version))
        try:
            canonical = artifact.canonical_map()
        except CanonicalMapError as exc:
            _fail(str(exc))
        source = f"model {version}"
        data_source = Path(str(artifact.manifest.get("data_source", "")))
        if data_source.is_dir():  # titles are a courtesy: the data may have moved
            titles = _titles(data_source)
    if as_json:
        console.print_json(json.dumps(canonical.to_json()))
        return
    table = Table(title=f"duplicate items of {source}: {len(canonical)} groups")
    table.add_column("canonical")
    table.add_column("folded into it")
    if titles:
        table.add_column("title")
    table.add_column("reason")
    for group in canonical.groups:
        title = [titles.get(group.canonical_id, "?")] if titles else []
        table.add_row(group.canonical_id, ", ".join(group.aliases), *title, group.reason)
    console.print(table)


def _text(value: Any) -> str:
    """A feature value as the items table holds it: lists "|"-joined, numbers in decimal."""
    if isinstance(value, list):
        return "|".join(str(v) for v in value)
    return str(value)


def read_items_file(path: Path) -> list[tuple[str, dict[str, str]]]:
    """(item_id, features) rows of a CSV (header: item_id + feature columns) or JSONL
    file (one object per line: ``item_id`` plus the feature columns, or ``item_id`` and a
    ``features`` object). Raises ValueError naming the line that is wrong."""
    import csv

    rows: list[tuple[str, dict[str, str]]] = []
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{path}:{n}: not JSON ({exc})") from None
            if not isinstance(obj, dict) or "item_id" not in obj:
                raise ValueError(f"{path}:{n}: an object with an item_id is expected")
            features = obj.get("features", {k: v for k, v in obj.items() if k != "item_id"})
            if not isinstance(features, dict):
                raise ValueError(f"{path}:{n}: features must be an object")
            rows.append(
                (str(obj["item_id"]), {k: _text(v) for k, v in features.items() if v is not None})
            )
        return rows
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "item_id" not in reader.fieldnames:
            raise ValueError(f"{path}: a CSV header with an item_id column is expected")
        for record in reader:
            item_id = record.pop("item_id") or ""
            rows.append((item_id, {k: v for k, v in record.items() if k and v not in (None, "")}))
    return rows


def parse_features(options: list[str]) -> dict[str, str]:
    """``col=value`` options → {col: value}. Raises ValueError for one without ``=``."""
    features: dict[str, str] = {}
    for option in options:
        column, sep, value = option.partition("=")
        if not sep or not column:
            raise ValueError(f"--feature {option!r}: expected column=value")
        features[column] = value
    return features


@items_app.command("add")
@friendly_errors
def add(
    file: Annotated[
        Path | None,
        typer.Option(
            "--file", help="CSV (item_id + feature columns) or JSONL of the items to add."
        ),
    ] = None,
    item_id: Annotated[str | None, typer.Option("--item-id", help="One item to add.")] = None,
    feature: Annotated[
        list[str] | None,
        typer.Option("--feature", help="col=value, repeated (with --item-id)."),
    ] = None,
    port: Port = defaults.PORT.default,
    admin_port: AdminPort = defaults.ADMIN_PORT.default,
    tls: UseTls = False,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_server_name: TlsServerName = None,
    token_file: AdminTokenFile = None,
) -> None:
    """Add (or replace) items with their feature columns; recallable within seconds.

    The server checks the features against its model's item feature spec; the refresher
    (`recall refresher`) embeds them with the item tower; every server answers with them
    after its next poll; the next index build folds them in."""
    if (file is None) == (item_id is None):
        _fail("give --file or --item-id (with --feature col=value options)")
    if file is not None and feature:
        _fail("--feature goes with --item-id; a file carries its own columns")
    try:
        if file is not None:
            items = read_items_file(file)
        else:
            assert item_id is not None
            items = [(item_id, parse_features(feature or []))]
    except ValueError as exc:
        _fail(str(exc))
    if not items:
        _fail(f"{file}: no items in it")
    client = admin_client(
        port, admin_port, tls, tls_ca, tls_cert, tls_key, tls_server_name, token_file
    )
    added, model = 0, ""
    try:
        for start in range(0, len(items), UPSERT_CHUNK):
            reply = client.upsert_items(items[start : start + UPSERT_CHUNK])
            added += reply.upserted
            model = reply.model_version
    finally:
        client.close()
    console.print(
        f"[green]added[/] {added} item(s), features checked against model {model}; "
        "recallable once the refresher has embedded them (about a second)"
    )


@items_app.command("remove")
@friendly_errors
def remove(
    item_ids: Annotated[list[str], typer.Argument(help="Item ids to take down (or lift).")],
    lift: Annotated[bool, typer.Option("--lift", help="Lift an earlier removal instead.")] = False,
    port: Port = defaults.PORT.default,
    admin_port: AdminPort = defaults.ADMIN_PORT.default,
    tls: UseTls = False,
    tls_ca: TlsCa = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_server_name: TlsServerName = None,
    token_file: AdminTokenFile = None,
) -> None:
    """Take items down: no server answers with them (or their duplicates) after its next
    poll, and index builds leave them out, until the removal is lifted (--lift)."""
    client = admin_client(
        port, admin_port, tls, tls_ca, tls_cert, tls_key, tls_server_name, token_file
    )
    try:
        reply = client.remove_items(item_ids, lift=lift)
    finally:
        client.close()
    verb = "lifted the removal of" if lift else "removed"
    console.print(
        f"[green]{verb}[/] {reply.changed} item(s) ({len(item_ids) - reply.changed} "
        f"unchanged); the deny set holds {reply.deny_set_size}"
    )
