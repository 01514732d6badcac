"""`recall items duplicates`: the duplicate item groups of a model artifact (what training
merged) or of a data directory (what training would merge), each with its reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.table import Table

from recall_cli import paths
from recall_cli.output import ArtifactRoot, console, err, friendly_errors

items_app = typer.Typer(help="The item catalogue: duplicate groups.", no_args_is_help=True)


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
