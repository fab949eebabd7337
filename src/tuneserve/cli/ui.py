"""``tuneserve ui``: the MLflow UI on tuneserve's store."""

from __future__ import annotations

import typer


def ui(
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(5000, "--port", min=1, max=65535),
) -> None:
    """Start the MLflow UI on the store tuneserve uses (runs, curves, registry)."""
    import os
    import subprocess
    import sys

    from tuneserve.registry import current_store

    store = current_store()
    if not store.uri.startswith(("sqlite:", "postgresql", "mysql", "mssql")):
        typer.echo(f"{store.uri} is an MLflow server: open it in a browser")
        return
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store.uri]
    command += ["--host", host, "--port", str(port)]
    if store.artifact_root:
        command += ["--default-artifact-root", store.artifact_root]
    typer.echo(f"MLflow UI for {store.uri} on http://{host}:{port} (Ctrl-C stops it)")
    raise typer.Exit(subprocess.call(command, env=os.environ.copy()))
