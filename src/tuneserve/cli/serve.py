"""``tuneserve serve --model N[@ALIAS|/V] --port P``: the HTTP model server."""

from __future__ import annotations

import typer

from ._signature import REQUIRE, TRUSTED


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
    grpc_port: int | None = typer.Option(
        None,
        "--grpc-port",
        min=1,
        max=65535,
        help="Also serve the Open Inference Protocol over gRPC on this port (same models, "
        "batching, keys and metrics; message limit --max-body-mb).",
    ),
    max_batch_size: int = typer.Option(32, "--max-batch-size", min=1),
    max_queue_delay_ms: float = typer.Option(2.0, "--max-queue-delay-ms", min=0.0),
    max_queue: int = typer.Option(1024, "--max-queue", min=1, help="Items waiting per model."),
    max_body_mb: float = typer.Option(32.0, "--max-body-mb", min=0.001),
    max_items: int = typer.Option(1024, "--max-items", min=1, help="Inputs per request."),
    timeout_s: float = typer.Option(30.0, "--timeout", min=0.001, help="Seconds per request."),
    max_image_pixels: int = typer.Option(
        40_000_000,
        "--max-image-pixels",
        min=1,
        help="Largest image (width x height) decoded; larger ones get 400, read from the "
        "header before decoding.",
    ),
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
    workers: int = typer.Option(1, "--workers", min=1, help="Server processes."),
    api_key: list[str] = typer.Option(
        [],
        "--api-key",
        help="KEY:SCOPE (predict or admin); repeat. Also TUNESERVE_API_KEYS. None: open.",
    ),
    require_signature: bool = REQUIRE,
    trusted_key: list[str] | None = TRUSTED,
) -> None:
    """Serve packages over HTTP: simple JSON (/v1) and the Open Inference Protocol (/v2);
    with --grpc-port, the Open Inference Protocol over gRPC too."""
    import os
    import shutil
    import tempfile

    # Prometheus multiprocess mode, in a folder the user chose: start it empty. prometheus_client
    # picks its mode when imported, so with workers this process (no worker: it only checks
    # that the models load) must import it without the variable.
    user_dir = os.environ.get(MULTIPROCESS_ENV)
    if user_dir and (stale := _clear_stale_metrics(user_dir)):
        typer.echo(f"removed {stale} metric files of an earlier run from {MULTIPROCESS_ENV}")
    if user_dir and workers > 1:
        del os.environ[MULTIPROCESS_ENV]

    import uvicorn

    from tuneserve.serving.config import ENV, ServeConfig, build_app

    config = ServeConfig(
        models=model,
        max_batch_size=max_batch_size,
        max_queue_delay_ms=max_queue_delay_ms,
        max_queue=max_queue,
        max_body_bytes=int(max_body_mb * 1024 * 1024),
        max_items=max_items,
        timeout_s=timeout_s,
        threads=threads,
        watch=watch,
        canary=canary,
        shadow=shadow,
        api_keys=api_key,
        max_image_pixels=max_image_pixels,
        require_signature=require_signature,
        trusted_keys=trusted_key or [],
        grpc_host=host,
        grpc_port=grpc_port,
    )
    if grpc_port is not None:
        if grpc_port == port:
            from tuneserve.exceptions import InvalidInputError

            raise InvalidInputError(
                f"--grpc-port {grpc_port} is also --port; HTTP and gRPC need a port each. "
                "Hint: --grpc-port 8001"
            )
        _check_free(host, grpc_port, "--grpc-port")
    app = build_app(config)  # every model must load before the server starts
    repository = app.state.repository
    for name in repository.names:
        served = repository.get(name)
        typer.echo(f"serving {name} version {served.version} from {served.source}")
    if grpc_port is not None:
        typer.echo(f"gRPC (Open Inference Protocol) on {host}:{grpc_port}")
    typer.echo(f"http://{host}:{port}/docs for the OpenAPI document; Ctrl-C stops")
    common: dict[str, object] = {
        "host": host,
        "port": port,
        "log_level": "warning",
        "timeout_graceful_shutdown": 30,
    }
    if workers == 1:
        uvicorn.run(app, **common)  # type: ignore[arg-type]
        return
    os.environ[ENV] = config.to_json()  # each worker process builds its own app from it
    typer.echo(f"{workers} worker processes (each loads the models and batches on its own)")
    # the workers' metrics meet here; /metrics sums them
    os.environ[MULTIPROCESS_ENV] = user_dir or tempfile.mkdtemp(prefix="tuneserve-metrics-")
    try:
        uvicorn.run(
            "tuneserve.serving.config:app_from_env",
            factory=True,
            workers=workers,
            **common,  # type: ignore[arg-type]
        )
    finally:
        if not user_dir:
            shutil.rmtree(os.environ.pop(MULTIPROCESS_ENV), ignore_errors=True)


def _check_free(host: str, port: int, option: str) -> None:
    """Refuse a port another program holds, before the models load (the gRPC server binds
    with SO_REUSEPORT for --workers, so its own bind would not notice every such program)."""
    import socket

    from tuneserve.exceptions import InvalidInputError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise InvalidInputError(
                f"{option} {port}: cannot listen on {host}:{port} ({exc.strerror}); another "
                "program holds it. Hint: choose a free port"
            ) from None


MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"  # as in serving.metrics, which imports prometheus


def _clear_stale_metrics(folder: str) -> int:
    """Empty a user's ``PROMETHEUS_MULTIPROC_DIR`` of an earlier run's metric files, as
    prometheus_client requires between runs (else /metrics adds the old counts to the new
    ones); only its own ``counter_*``, ``gauge_*``, ``histogram_*``, ``summary_*`` files."""
    from pathlib import Path

    from tuneserve.exceptions import InvalidInputError

    path = Path(folder)
    kinds = ("counter_", "gauge_", "histogram_", "summary_")
    try:
        path.mkdir(parents=True, exist_ok=True)
        stale = [f for f in path.glob("*.db") if f.name.startswith(kinds)]
        for file in stale:
            file.unlink(missing_ok=True)
    except OSError as exc:
        raise InvalidInputError(
            f"{MULTIPROCESS_ENV}={folder!r} cannot be used for the metrics: {exc}. Hint: point "
            "it at a writable folder that belongs to this server alone, or unset it"
        ) from exc
    return len(stale)
