"""Summarise `airflow dags list-runs -o json` (stdin) as one word for tests/containers/run.sh:
success (some run succeeded), failed (every run failed), else the runs' states joined by
commas ('' when there are none). Airflow may print other lines around the JSON."""

import contextlib
import json
import sys

runs: list = []
for line in sys.stdin.read().splitlines():  # the JSON is one line; log lines start with a date
    if line.startswith("[{") or line.strip() == "[]":
        with contextlib.suppress(json.JSONDecodeError):
            runs = json.loads(line)
states = [str(r.get("state")) for r in runs if isinstance(r, dict)]
if "success" in states:
    print("success")
elif states and all(s == "failed" for s in states):
    print("failed")
else:
    print(",".join(states))
