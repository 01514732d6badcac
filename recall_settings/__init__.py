"""One home for the defaults every process shares (the CLI, the Airflow DAGs, the server).

``recall_settings.defaults`` declares each setting once: its name, its ``RECALL_*``
environment variable, its type, default, bounds and a description. Everything else reads
from it: ``serving.config.ServerSettings`` field defaults, the `recall` CLI's option
defaults, the DAGs' typed Airflow ``Param``s and the settings table in docs/runbook.md.

Cheap to import on purpose (the DAG file imports it when Airflow parses it): standard
library only, no numpy, TensorFlow, Faiss or Airflow.
"""

from recall_settings.defaults import SETTINGS, Setting, SettingError

__all__ = ["SETTINGS", "Setting", "SettingError"]
