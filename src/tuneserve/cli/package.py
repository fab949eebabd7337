"""``tuneserve package ...``: inspect model packages."""

from __future__ import annotations

import typer

from ._output import console, print_json, shown

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
    out.print(f"[bold]{shown(m.name)}[/bold]  {pkg.id}  ({shown(pkg.path)})")
    size_mb = pkg.size_bytes() / 1e6
    out.print(f"{m.task}, {m.modality}, format {m.format_version}, {size_mb:.2f} MB, checksums OK")
    if m.label_names:
        out.print(f"labels ({len(m.label_names)}): {', '.join(shown(n) for n in m.label_names)}")
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


@app.command("keygen")
def keygen(
    out: str = typer.Option(..., "--out", "-o", help="Private key file; KEY.pub is beside it."),
    force: bool = typer.Option(False, "--force", help="Replace existing key files."),
) -> None:
    """Make an Ed25519 key pair for signing packages (the private key is mode 0600)."""
    from tuneserve.signing import generate_key

    private, public, key_id = generate_key(out, overwrite=force)
    console().print(f"wrote {private} (private: keep it secret) and {public} ({key_id})")


@app.command("sign")
def sign(
    package: str = typer.Argument(..., help="Package directory."),
    key: str = typer.Option(..., "--key", "-k", help="Private key (tuneserve package keygen)."),
) -> None:
    """Sign a package (its id, which covers the manifest and every file) with a private key;
    serve, predict and registry register can then insist on a trusted signature."""
    from tuneserve.signing import SIGNATURE_FILE, sign_package

    signature = sign_package(package, key)
    console().print(
        f"signed {signature.package_id} with {signature.key_id}: {package}/{SIGNATURE_FILE}"
    )


@app.command("verify")
def verify(
    package: str = typer.Argument(..., help="Package directory."),
    trusted_key: list[str] = typer.Option(
        ..., "--trusted-key", help="A trusted public key (KEY.pub); repeat for several."
    ),
) -> None:
    """Check a package's checksums and that a trusted key signed it (exit 2 if not)."""
    from tuneserve.signing import verify_signature

    key_id = verify_signature(package, trusted_key)
    console().print(f"{package}: checksums OK, signed by {key_id} (trusted)")
