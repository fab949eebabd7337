"""``tuneserve serve --model N[@ALIAS|/V] --port P``: the HTTP model server."""

from __future__ import annotations

import typer


def serve(
    model: list[str] = typer.Option(
        ...,
        "--model",
        "-m",
        help="A registered model (N = its champion, N@ALIAS, N/VERSION, models:/...) or a "
        "package folder (NAME=PATH to name it). Repeat for several models.",
    ),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port", min=1, max=65535),
    max_batch_size: int = typer.Option(32, "--max-batch-size", min=1),
    max_queue_delay_ms: float = typer.Option(2.0, "--max-queue-delay-ms", min=0.0),
    max_queue: int = typer.Option(1024, "--max-queue", min=1, help="Items waiting per model."),
    max_body_mb: float = typer.Option(32.0, "--max-body-mb", min=0.001),
    max_items: int = typer.Option(1024, "--max-items", min=1, help="Inputs per request."),
    timeout_s: float = typer.Option(30.0, "--timeout", min=0.001, help="Seconds per request."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="ONNX Runtime threads."),
    watch: float = typer.Option(
        5.0,
        "--watch",
        min=0.0,
        help="Seconds between checks of registry aliases (0: off). When an alias moves, the "
        "new version is loaded, warmed up and swapped in without dropping requests.",
    ),
    canary: list[str] = typer.Option(
        [], "--canary", help="MODEL:PERCENT of MODEL's requests answered by its challenger."
    ),
    shadow: list[str] = typer.Option(
        [], "--shadow", help="MODEL: mirror its requests to its challenger and compare."
    ),
    api_key: list[str] = typer.Option(
        [],
        "--api-key",
        help="KEY:SCOPE (predict or admin); repeat. Also TUNESERVE_API_KEYS. None: open.",
    ),
) -> None:
    """Serve packages over HTTP: simple JSON (/v1) and the Open Inference Protocol (/v2)."""
    import uvicorn

    from tuneserve.serving import BatchSettings, Limits, ModelSpec, Repository, create_app
    from tuneserve.serving.auth import parse_keys
    from tuneserve.serving.traffic import Traffic

    keys = parse_keys(api_key)

    specs = [ModelSpec.parse(m) for m in model]
    traffic = Traffic.parse(canary, shadow)
    repository = Repository(
        specs + traffic.companions(specs),
        BatchSettings(max_batch_size, max_queue_delay_ms, max_queue),
        intra_op_threads=threads,
    )
    repository.load_all()
    limits = Limits(int(max_body_mb * 1024 * 1024), max_items, timeout_s)
    app = create_app(repository, limits, keys, watch_interval=watch or None, traffic=traffic)
    for name in repository.names:
        served = repository.get(name)
        typer.echo(f"serving {name} version {served.version} from {served.source}")
    typer.echo(f"http://{host}:{port}/docs for the OpenAPI document; Ctrl-C stops")
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=30)
