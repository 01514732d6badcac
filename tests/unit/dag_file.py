"""Loading the DAG file the way Airflow's DAG processor does: by path, as a module."""

from __future__ import annotations

import importlib.util
from types import ModuleType

from pipelines.runner import DAGS_FOLDER


def load_dag_file(module_name: str) -> ModuleType:
    """``pipelines/dags/recall_pipelines.py`` executed as a fresh module ``module_name``
    (a distinct name per caller, so no test sees another's module object)."""
    spec = importlib.util.spec_from_file_location(module_name, DAGS_FOLDER / "recall_pipelines.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
