"""recall_settings: the typed environment reader, the JSON Schema it gives the DAG params,
that it stays cheap to import, and that nothing re-spells a default (the CLI options, the
DAG params and the server's settings all equal the module's)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import click
import pytest
import typer

from pipelines.runner import DAGS_FOLDER
from recall_settings import SETTINGS, SettingError, defaults
from tests.unit.dag_file import load_dag_file

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dags_module() -> ModuleType:
    return load_dag_file("recall_pipelines_settings")


def test_env_values_are_typed_and_checked() -> None:
    env = {
        "RECALL_EPOCHS": "7",
        "RECALL_MIN_RECALL": "0.9",
        "RECALL_GATE_ENFORCE": "false",
        "RECALL_FLEET": "a:1,b:2",
    }
    assert defaults.EPOCHS.value(env) == 7
    assert defaults.MIN_RECALL.value(env) == 0.9
    assert defaults.GATE_ENFORCE.value(env) is False
    assert defaults.FLEET.value(env) == "a:1,b:2"
    assert defaults.EPOCHS.value({}) == 30
    assert defaults.EPOCHS.value({"RECALL_EPOCHS": ""}) == 30  # empty = unset for numbers
    with pytest.raises(SettingError, match=r"RECALL_EPOCHS='many': not an integer"):
        defaults.EPOCHS.value({"RECALL_EPOCHS": "many"})
    with pytest.raises(SettingError, match=r"RECALL_EPOCHS=0: must be at least 1"):
        defaults.EPOCHS.value({"RECALL_EPOCHS": "0"})
    with pytest.raises(SettingError, match=r"RECALL_MIN_RECALL=1.5: must be at most 1"):
        defaults.MIN_RECALL.value({"RECALL_MIN_RECALL": "1.5"})
    with pytest.raises(SettingError, match=r"RECALL_GATE_ENFORCE='maybe': not true or false"):
        defaults.GATE_ENFORCE.value({"RECALL_GATE_ENFORCE": "maybe"})


def test_derived_defaults_follow_recall_home_and_the_redis_port(tmp_path: Path) -> None:
    env = {"RECALL_HOME": str(tmp_path), "RECALL_REDIS_PORT": "7001"}
    assert defaults.ARTIFACT_ROOT.value(env) == str(tmp_path / "artifacts")
    assert defaults.DATA_DIR.value(env) == str(tmp_path / "data" / "ml-100k")
    assert defaults.REDIS_URL.value(env) == "redis://127.0.0.1:7001/0"
    assert defaults.REDIS_URL.value({**env, "RECALL_REDIS_URL": "redis://r:1/2"}) == (
        "redis://r:1/2"
    )
    with pytest.raises(SettingError, match="RECALL_REDIS_PORT=70000"):
        defaults.REDIS_URL.value({"RECALL_REDIS_PORT": "70000"})


def test_json_schema_carries_type_bounds_and_names_are_unique() -> None:
    assert defaults.EPOCHS.json_schema() == {"type": "integer", "minimum": 1, "maximum": 1000}
    assert defaults.MIN_RECALL.json_schema() == {"type": "number", "minimum": 0.0, "maximum": 1.0}
    assert defaults.GATE_ENFORCE.json_schema() == {"type": "boolean"}
    assert len({s.name for s in SETTINGS}) == len(SETTINGS)
    for s in SETTINGS:
        assert s.env == "RECALL_" + s.name.upper()
        assert s.description, s.name
        assert s.check(s.default) == s.default  # every default is within its own bounds


def test_importing_the_settings_is_cheap() -> None:
    """The DAG file imports it at parse time: no numpy, pandas, TensorFlow, Faiss, Airflow."""
    code = (
        "import sys, recall_settings.defaults; "
        "heavy = {'numpy', 'pandas', 'tensorflow', 'faiss', 'airflow', 'pydantic'}; "
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]"


def test_the_settings_table_in_the_runbook_is_the_modules() -> None:
    text = (ROOT / "docs" / "runbook.md").read_text()
    match = re.search(
        r"<!-- settings-table:begin.*?-->\n(.*?)\n<!-- settings-table:end -->", text, re.S
    )
    assert match, "docs/runbook.md lost its settings-table markers"
    assert match.group(1).strip() == defaults.markdown_table()


# ------------------------------------------------------------------ nothing re-spells a default
def _click_params(*path: str) -> dict[str, click.Parameter]:
    from recall_cli.main import app

    command: Any = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    return {p.name: p for p in command.params if p.name}


@pytest.mark.parametrize(
    ("command", "options"),
    [
        (
            ("pipeline", "run"),
            {
                "epochs": defaults.EPOCHS,
                "min_recall": defaults.MIN_RECALL,
                "keep_indexes": defaults.KEEP_INDEXES,
                "model_gate": defaults.GATE_ENFORCE,
                "popularity_margin": defaults.GATE_POPULARITY_MARGIN,
                "serving_tolerance": defaults.GATE_SERVING_TOLERANCE,
            },
        ),
        (("vectors", "prune"), {"keep_indexes": defaults.KEEP_INDEXES}),
        (("query",), {"port": defaults.PORT}),
        (("status",), {"port": defaults.PORT, "admin_port": defaults.ADMIN_PORT}),
        (("load-index",), {"port": defaults.PORT, "admin_port": defaults.ADMIN_PORT}),
        (("interactions", "add"), {"port": defaults.PORT}),
    ],
)
def test_cli_option_defaults_are_the_settings(
    command: tuple[str, ...], options: dict[str, defaults.Setting[Any]]
) -> None:
    params = _click_params(*command)
    for name, setting in options.items():
        assert params[name].default == setting.default, (command, name)
        assert params[name].envvar == setting.env, (command, name)


def test_cli_paths_are_the_settings() -> None:
    params = _click_params("pipeline", "run")
    assert params["artifact_root"].default == defaults.ARTIFACT_ROOT.value()
    assert params["redis_url"].default == defaults.REDIS_URL.value()
    assert str(params["data"].default) == defaults.DATA_DIR.value()


def test_dag_params_are_typed_settings(dags_module: ModuleType) -> None:
    seen = set()
    for build in (
        dags_module.recall_train,
        dags_module.recall_vectors,
        dags_module.recall_index,
        dags_module.recall_rebuild_index,
        dags_module.recall_ship,
        dags_module.recall_refresh_vectors,
    ):
        dag = build()
        for name in dag.params:
            setting = defaults.BY_NAME.get(name)
            if setting is None:
                continue
            seen.add(name)
            param = dag.params.get_param(name)
            assert param.value == setting.value(), (dag.dag_id, name)
            assert param.schema == setting.json_schema(), (dag.dag_id, name)
            assert param.description == setting.description
    assert seen >= {
        "data_dir",
        "artifact_root",
        "redis_url",
        "epochs",
        "train_config",
        "min_recall",
        "gate_popularity_margin",
        "gate_serving_tolerance",
        "gate_enforce",
        "keep_indexes",
        "history_max_items",
        "fleet",
        "fleet_canary",
    }


def test_server_training_and_gate_defaults_are_the_settings() -> None:
    from artifacts.model_gate import (
        DEFAULT_POPULARITY_MARGIN,
        DEFAULT_SERVING_TOLERANCE,
        ModelGateConfig,
    )
    from keyspace.histories import HISTORY_MAX_ITEMS
    from serving.config import ServerSettings
    from serving.fleet import FleetSettings
    from serving.index.params import DEFAULT_MIN_RECALL
    from training.config import TrainConfig
    from training.refresher import RefresherSettings

    fields = ServerSettings.model_fields
    server: dict[str, defaults.Setting[Any]] = {
        "host": defaults.HOST,
        "port": defaults.PORT,
        "admin_port": defaults.ADMIN_PORT,
        "metrics_port": defaults.METRICS_PORT,
        "history_max_items": defaults.HISTORY_MAX_ITEMS,
    }
    for name, setting in server.items():
        assert fields[name].default == setting.default, name
    assert fields["redis_url"].default_factory is not None
    assert fields["redis_url"].default_factory() == defaults.REDIS_URL.default_in()  # type: ignore[call-arg]
    artifact_root = fields["artifact_root"].default_factory
    assert artifact_root is not None
    assert artifact_root() == defaults.ARTIFACT_ROOT.default_in()  # type: ignore[call-arg]
    refresher = RefresherSettings.model_fields
    assert refresher["redis_url"].default_factory is defaults.default_redis_url
    refresher_root = refresher["artifact_root"].default_factory
    assert refresher_root is not None
    assert refresher_root() == defaults.ARTIFACT_ROOT.default_in()  # type: ignore[call-arg]
    assert FleetSettings.model_fields["fleet"].default == defaults.FLEET.default
    assert FleetSettings.model_fields["fleet_canary"].default == defaults.FLEET_CANARY.default
    assert TrainConfig.model_fields["epochs"].default == defaults.EPOCHS.default
    assert defaults.MIN_RECALL.default == DEFAULT_MIN_RECALL
    assert defaults.GATE_POPULARITY_MARGIN.default == DEFAULT_POPULARITY_MARGIN
    assert defaults.GATE_SERVING_TOLERANCE.default == DEFAULT_SERVING_TOLERANCE
    assert ModelGateConfig().enforce == defaults.GATE_ENFORCE.default
    assert defaults.HISTORY_MAX_ITEMS.default == HISTORY_MAX_ITEMS


def test_a_bad_environment_variable_is_one_line_not_a_traceback() -> None:
    env = {**os.environ, "RECALL_REDIS_PORT": "abc"}
    out = subprocess.run(
        [sys.executable, "-m", "recall_cli.main", "--help"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert out.returncode == 2
    assert out.stderr.strip() == "error: RECALL_REDIS_PORT='abc': not an integer"


def test_the_dag_file_refuses_a_bad_environment_variable_by_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RECALL_KEEP_INDEXES", "0")
    spec = importlib.util.spec_from_file_location(
        "recall_pipelines_bad_env", DAGS_FOLDER / "recall_pipelines.py"
    )
    assert spec and spec.loader
    with pytest.raises(SettingError, match=r"RECALL_KEEP_INDEXES=0: must be at least 1"):
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


def test_choices_become_a_json_schema_enum_and_are_checked() -> None:
    mode = defaults.Setting(
        "failure_mode", str, "fallback", "What to do.", choices=("fallback", "unavailable")
    )
    assert mode.json_schema() == {"type": "string", "enum": ["fallback", "unavailable"]}
    assert mode.value({"RECALL_FAILURE_MODE": "unavailable"}) == "unavailable"
    with pytest.raises(SettingError, match="must be one of fallback, unavailable"):
        mode.value({"RECALL_FAILURE_MODE": "crash"})
