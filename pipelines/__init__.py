"""Airflow 3 pipelines (``dags/``) and the runner behind `recall pipeline run`.

DAG files stay thin: each task calls one function of ``training.tasks`` or
``serving.tasks`` and passes artifact URIs (strings) to the next task, never vectors.
"""
