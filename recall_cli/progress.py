"""A one-line spinner that leaves sys.stdout alone.

rich's ``console.status`` redirects ``sys.stdout``/``sys.stderr`` into the display while it
runs; during `recall pipeline run` those carry Airflow's log, which belongs in its file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.live import Live
from rich.spinner import Spinner


@contextmanager
def spinner_line(console: Console, text: str) -> Iterator[Callable[[str], None]]:
    """Show ``text`` with a spinner; yields a function that replaces the text (thread-safe)."""
    spinner = Spinner("dots", text=text)
    with Live(
        spinner,
        console=console,
        transient=True,
        redirect_stdout=False,
        redirect_stderr=False,
        refresh_per_second=8,
    ):
        yield lambda new_text: spinner.update(text=new_text)
