"""``tuneserve ui``: the MLflow UI on tuneserve's store."""

from __future__ import annotations

import typer


def ui(
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(5000, "--port", min=1, max=65535),
) -> None:
    """Start the MLflow UI on the store tuneserve uses (runs, curves, registry)."""
    import contextlib
    import os
    import signal
    import subprocess
    import sys

    from tuneserve.registry import current_store

    store = current_store()
    if not store.uri.startswith(("sqlite:", "postgresql", "mysql", "mssql")):
        typer.echo(f"{store.uri} is an MLflow server: open it in a browser")
        return
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store.uri]
    command += ["--host", host, "--port", str(port), "--workers", "1"]
    if store.artifact_root:
        command += ["--default-artifact-root", store.artifact_root]
    typer.echo(f"MLflow UI for {store.uri} on http://{host}:{port} (Ctrl-C stops it)")

    # MLflow starts a tree of processes: run it in its own group and stop the whole group.
    # Explicit handlers: a process started in the background inherits SIGINT as ignored,
    # and Python then never raises KeyboardInterrupt, so Ctrl-C or `kill -INT` did nothing.
    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, interrupt) for sig in signals}
    proc: subprocess.Popen[bytes] | None = None

    def stop(sig: int) -> None:
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)

    try:
        proc = subprocess.Popen(command, env=os.environ.copy(), start_new_session=True)
        code = proc.wait()
    except KeyboardInterrupt:
        for sig in signals:  # a second Ctrl-C must not cut the shutdown short
            signal.signal(sig, signal.SIG_IGN)
        if proc is None:
            raise typer.Exit(130) from None
        stop(signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            stop(signal.SIGKILL)
            code = proc.wait()
    finally:
        stop(signal.SIGTERM)  # helpers MLflow left behind (its job runner) must not outlive us
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    raise typer.Exit(code if code >= 0 else 0)
