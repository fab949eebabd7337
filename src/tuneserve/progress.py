"""Progress bars with ETA for long steps (rich, on stderr)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def progress_bar(
    description: str, total: int | None, enabled: bool | None = None
) -> Iterator[Callable[..., None]]:
    """Show a bar with count, elapsed time and ETA; yield ``advance(n=1, **fields)``.

    The bar draws only on an interactive terminal (or with ``TUNESERVE_PROGRESS=1``), so
    logs and CI output stay clean. Extra keyword fields (``loss=0.12``) show beside the bar.
    """
    if enabled is None:
        enabled = os.environ.get("TUNESERVE_PROGRESS", "") == "1" or sys.stderr.isatty()
    if not enabled:
        yield lambda n=1, **fields: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task(description, total=total, info="")

        def advance(n: int = 1, **fields: float | str) -> None:
            info = "  ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items()
            )
            if fields:
                progress.update(task, advance=n, info=info)
            else:
                progress.update(task, advance=n)

        yield advance
