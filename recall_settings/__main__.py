"""`python -m recall_settings`: print the settings table of docs/runbook.md (paste it
between the ``settings-table`` markers; tests/unit/test_settings.py checks they match)."""

from recall_settings.defaults import markdown_table

print(markdown_table())
