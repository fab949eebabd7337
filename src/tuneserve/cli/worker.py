"""``tuneserve worker``: answer inference requests from a Redis Stream; ``tuneserve submit``:
queue requests and print the answers."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import typer

from ._output import console, print_json, shown
from .predict import _image_inputs, _path, _table_inputs, _text_inputs

QUEUE = typer.Option(..., "--queue", "-q", help="Redis URL: redis://HOST:PORT/DB.")
STREAM = typer.Option("tuneserve:requests", "--stream", help="The request stream.")


def worker(
    model: list[str] = typer.Option(
        ...,
        "--model",
        "-m",
        help="A registered model (N = its champion, N@ALIAS, N/VERSION) or a package folder "
        "(NAME=PATH to name it). Repeat for several models.",
    ),
    queue: str = QUEUE,
    stream: str = STREAM,
    group: str = typer.Option("tuneserve-workers", "--group", help="The consumer group."),
    consumer: str | None = typer.Option(
        None, "--consumer", help="This worker's name in the group (default: hostname-pid)."
    ),
    concurrency: int = typer.Option(64, "--concurrency", min=1, help="Messages in work at once."),
    visibility_timeout: float | None = typer.Option(
        None,
        "--visibility-timeout",
        min=0.01,
        help="Seconds a message may stay unacknowledged before another worker claims it "
        "(a live worker renews its own); must exceed --timeout. Default: 2 x --timeout, at "
        "least 60.",
    ),
    max_attempts: int = typer.Option(
        5, "--max-attempts", min=1, help="Deliveries before a failing message is dead-lettered."
    ),
    result_ttl: int = typer.Option(
        86400, "--result-ttl", min=1, help="Seconds a request id is remembered (answered once)."
    ),
    results_maxlen: int = typer.Option(
        1_000_000, "--results-maxlen", min=1, help="Results stream trimmed to about this many."
    ),
    dead_maxlen: int = typer.Option(
        100_000, "--dead-maxlen", min=1, help="Dead-letter stream trimmed to about this many."
    ),
    metrics_port: int | None = typer.Option(
        None, "--metrics-port", min=0, max=65535, help="Serve /metrics here (0: a free port)."
    ),
    max_batch_size: int = typer.Option(32, "--max-batch-size", min=1),
    max_queue_delay_ms: float = typer.Option(2.0, "--max-queue-delay-ms", min=0.0),
    max_queue: int = typer.Option(1024, "--max-queue", min=1, help="Items waiting per model."),
    max_items: int = typer.Option(1024, "--max-items", min=1, help="Inputs per request."),
    max_body_mb: float = typer.Option(
        32.0, "--max-body-mb", min=0.001, help="Largest request message (its JSON), in MiB."
    ),
    timeout_s: float = typer.Option(30.0, "--timeout", min=0.000001, help="Seconds per request."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="ONNX Runtime threads."),
    watch: float = typer.Option(
        5.0, "--watch", min=0.0, help="Seconds between checks of registry aliases (0: off)."
    ),
) -> None:
    """Answer inference requests from a Redis Stream (consumer group, at-least-once, one
    result per request id). SIGTERM drains."""
    import asyncio
    import logging

    from tuneserve.exceptions import InvalidInputError
    from tuneserve.queueing import WorkerConfig, WorkerSettings, load_state, run_worker
    from tuneserve.serving.repository import BatchSettings
    from tuneserve.serving.state import Limits

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    if visibility_timeout is None:
        visibility_timeout = max(60.0, 2 * timeout_s)
    elif visibility_timeout <= timeout_s:
        raise InvalidInputError(
            f"--visibility-timeout {visibility_timeout:g} must exceed --timeout {timeout_s:g}: "
            "a message still in work would be claimed and run again. Hint: pass "
            f"--visibility-timeout {max(60.0, 2 * timeout_s):g} or a shorter --timeout"
        )
    if max_items > max_queue:
        raise InvalidInputError(
            f"--max-items {max_items} is above --max-queue {max_queue}: a request that large "
            "could never enter its model's queue and would be retried until dead-lettered. "
            f"Hint: --max-items {max_queue} or --max-queue {max_items}"
        )
    settings = WorkerSettings(
        stream=stream,
        group=group,
        concurrency=concurrency,
        visibility_timeout=visibility_timeout,
        max_attempts=max_attempts,
        result_ttl=result_ttl,
        results_maxlen=results_maxlen,
        dead_maxlen=dead_maxlen,
        read_count=max_batch_size,
    )
    if consumer:
        settings.consumer = consumer
    config = WorkerConfig(
        models=model,
        url=queue,
        settings=settings,
        batch=BatchSettings(max_batch_size, max_queue_delay_ms, max_queue),
        limits=Limits(
            max_body_bytes=int(max_body_mb * 2**20), max_items=max_items, timeout_s=timeout_s
        ),
        watch=watch,
        threads=threads,
        metrics_port=metrics_port,
    )
    _check_redis(queue, stream)  # a wrong URL, a Redis that is down or a --stream naming
    # a key of another type fails before the models load
    state = load_state(config)
    for name in state.repository.names:
        served = state.repository.get(name)
        typer.echo(f"serving {name} version {served.version} from {served.source}")
    try:
        processed = run_worker(config, state, lambda line: typer.echo(line, err=True))
    except asyncio.CancelledError:
        typer.echo(
            "stopped at once: messages in work stay pending; other workers claim them after "
            "the visibility timeout",
            err=True,
        )
        raise typer.Exit(1) from None
    typer.echo(f"drained: {processed} requests answered by this worker", err=True)


def _check_redis(url: str, stream: str) -> None:
    from tuneserve.queueing import connect_sync
    from tuneserve.queueing.connection import check_stream

    client = connect_sync(url)
    try:
        check_stream(str(client.type(stream)), stream)
    finally:
        client.close()


def _inputs(items: list[str], modality: str, text_column: str | None) -> list[Any]:
    """Raw inputs as the simple JSON API takes them, read as ``tuneserve predict`` reads
    them: image files (sent as base64), table files or JSON rows, texts."""
    if modality == "auto":
        modality = _guess(items)
    if modality == "image":
        paths, _ = _image_inputs(items)
        return [base64.b64encode(Path(p).read_bytes()).decode() for p in paths]
    if modality == "table":
        return _table_inputs(items)[0]
    return _text_inputs(items, text_column)[0]


def _guess(items: list[str]) -> str:
    """Image files or folders: image; table files or JSON rows: table; else text."""
    from tuneserve.data import TABLE_SUFFIXES
    from tuneserve.preprocessing import IMAGE_SUFFIXES

    paths = [_path(item) for item in items]
    if all(p is not None and (p.is_dir() or p.suffix.lower() in IMAGE_SUFFIXES) for p in paths):
        return "image"

    def row(item: str, path: Path | None) -> bool:
        if path is not None:
            return path.suffix.lower() in TABLE_SUFFIXES
        try:
            return isinstance(json.loads(item), dict | list)
        except json.JSONDecodeError:
            return False

    if all(row(i, p) for i, p in zip(items, paths, strict=True)):
        return "table"
    return "text"


def submit(
    inputs: list[str] = typer.Argument(
        ...,
        help="Image files or folders; a CSV/Parquet/JSONL file or JSON rows for tables; "
        "strings, a .txt file (one text per line) or a CSV for text.",
    ),
    queue: str = QUEUE,
    model: str = typer.Option(..., "--model", "-m", help="The model a worker serves."),
    stream: str = STREAM,
    modality: str = typer.Option(
        "auto",
        "--modality",
        help="How to read INPUTS: auto, text, image or table (auto: image files are images, "
        "table files and JSON rows are tables, anything else is text).",
    ),
    text_column: str | None = typer.Option(None, "--text-column", help="Text column of a CSV."),
    version: str | None = typer.Option(None, "--version", help="A loaded version to ask."),
    timeout: float = typer.Option(60.0, "--timeout", min=0.001, help="Seconds to wait."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait and print the answer."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Queue one request for the workers of a Redis Stream and print its predictions."""
    from tuneserve.client import QueueClient
    from tuneserve.exceptions import InvalidInputError, UnavailableError

    if modality not in ("auto", "text", "image", "table"):
        raise InvalidInputError(f"--modality {modality!r}: choose auto, text, image or table")
    raw = _inputs(inputs, modality, text_column)
    with QueueClient(queue, stream=stream, model=model, timeout=timeout) as client:
        future = client.submit(raw, version=version)
        if not wait:
            print_json({"id": future.request_id}) if as_json else typer.echo(future.request_id)
            return
        try:
            answer = future.result()
        except TimeoutError as exc:
            raise UnavailableError(str(exc)) from None
    if as_json:
        print_json({"id": future.request_id, **answer})
        return
    _show(answer)


def _show(answer: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table("#", "prediction", title=f"{answer['model']} version {answer['version']}")
    for i, p in enumerate(answer["predictions"]):
        if "label" in p:
            probability = (p.get("probabilities") or {}).get(p["label"])
            shown_p = f" ({probability:.3f})" if probability is not None else ""
            table.add_row(str(i), shown(p["label"]) + shown_p)
        elif "value" in p:
            table.add_row(str(i), f"{p['value']:.6g}")
        else:
            table.add_row(str(i), shown(json.dumps(p)[:80]))
    console().print(table)
