"""``tuneserve package ...``: inspect model packages."""

from __future__ import annotations

import typer

from ._output import console, print_json

app = typer.Typer(help="Inspect model packages.", no_args_is_help=True)


@app.command("show")
def show(
    package: str = typer.Argument(..., help="Package directory."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
) -> None:
    """Show a package's task, labels, inputs, metrics and lineage (checksums verified)."""
    from rich.table import Table

    from tuneserve.package import Package

    pkg = Package.load(package)
    m = pkg.manifest
    if as_json:
        print_json({"path": str(pkg.path), "size_bytes": pkg.size_bytes(), **m.model_dump()})
        return
    out = console()
    out.print(f"[bold]{m.name}[/bold]  {pkg.id}  ({pkg.path})")
    size_mb = pkg.size_bytes() / 1e6
    out.print(f"{m.task}, {m.modality}, format {m.format_version}, {size_mb:.2f} MB, checksums OK")
    if m.label_names:
        out.print(f"labels ({len(m.label_names)}): {', '.join(m.label_names)}")
    out.print(f"input: {m.input_schema}")
    out.print(
        f"graph: {m.graph.file}, inputs {m.graph.inputs} -> {m.graph.output} "
        f"({m.graph.output_kind}), opset {m.graph.opset}, parity {m.graph.parity_max_abs_diff}"
    )
    if m.metrics:
        table = Table("metric", "value")
        for k, v in m.metrics.items():
            table.add_row(k, f"{v:.4f}")
        out.print(table)
    lin = m.lineage
    out.print(
        f"lineage: data {lin.data_fingerprint}, parent {lin.parent}, tuneserve "
        f"{lin.tuneserve_version}, git {lin.git_revision}, created {lin.created_at}"
    )
    files = Table("file", "bytes", "sha256")
    for name, digest in m.files.items():
        files.add_row(name, str((pkg.path / name).stat().st_size), digest[7:23] + "...")
    out.print(files)
