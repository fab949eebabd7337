"""Progress bars with ETA for long steps (rich, on stderr)."""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


#: The bar display drawing now: a bar opened inside another becomes a line of the same
#: display (rich draws one live display per console at a time).
_ACTIVE: contextvars.ContextVar[Any] = contextvars.ContextVar("tuneserve_progress", default=None)


@contextlib.contextmanager
def progress_bar(
    description: str, total: int | None, enabled: bool | None = None, transient: bool = False
) -> Iterator[Callable[..., None]]:
    """Show a bar with count, elapsed time and ETA; yield ``advance(n=1, **fields)``.

    The bar draws only on an interactive terminal (or with ``TUNESERVE_PROGRESS=1``; ``0``
    turns it off), so logs and CI output stay clean. Extra keyword fields (``loss=0.12``)
    show beside the bar. A ``transient`` bar is erased when done. A bar opened while
    another is drawn is a line under it.
    """
    if enabled is None:
        setting = os.environ.get("TUNESERVE_PROGRESS", "")
        enabled = setting == "1" or (setting != "0" and sys.stderr.isatty())
    if not enabled:
        yield lambda n=1, **fields: None
        return
    outer = _ACTIVE.get()
    if outer is not None:
        task = outer.add_task(description, total=total, info="")
        try:
            yield _advancer(outer, task)
        finally:
            if transient:
                outer.remove_task(task)
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
    with Progress(*columns, console=Console(stderr=True), transient=transient) as progress:
        token = _ACTIVE.set(progress)
        try:
            yield _advancer(progress, progress.add_task(description, total=total, info=""))
        finally:
            _ACTIVE.reset(token)


def _advancer(progress: Any, task: Any) -> Callable[..., None]:
    def advance(n: int = 1, **fields: float | str) -> None:
        info = "  ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items()
        )
        if fields:
            progress.update(task, advance=n, info=info)
        else:
            progress.update(task, advance=n)

    return advance


def with_progress(description: str, total: int, work: Callable[[Callable[..., None]], T]) -> T:
    """``work(advance)`` under a bar of ``total`` steps that is erased when done, e.g.
    scoring rows through ``Predictor.run(rows, progress=advance)``."""
    with progress_bar(description, total=total, transient=True) as advance:
        return work(advance)
