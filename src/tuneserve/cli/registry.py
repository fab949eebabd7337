"""``tuneserve registry ...``: versions, aliases, promote and rollback on MLflow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ._output import console, print_json
from ._signature import REQUIRE, TRUSTED, check_signature

app = typer.Typer(
    help="Model registry on MLflow: register, list, show, compare, promote, rollback, alias, "
    "export, import. MLFLOW_TRACKING_URI picks the store (default: embedded SQLite).",
    no_args_is_help=True,
)


def _registry() -> Any:
    from tuneserve.registry import Registry

    return Registry()


def _print_version(v: Any) -> None:
    con = console()
    aliases = f" @{', @'.join(v.aliases)}" if v.aliases else ""
    con.print(f"[bold]{v.name}/{v.version}[/bold]{aliases}  package {v.package_id}")
    if v.description:
        con.print(v.description)
    con.print(f"created {v.created}, run {v.run_id}")
    for key, value in sorted(v.metrics.items()):
        con.print(f"  {key}: {value:.4f}")
    for key, value in sorted(v.tags.items()):
        if value and key.startswith("tuneserve.") and key != "tuneserve.package_id":
            con.print(f"  {key.removeprefix('tuneserve.')}: {value}")


@app.command("register")
def register(
    package: Path = typer.Argument(..., help="Package directory."),
    name: str = typer.Option(..., "--name", "-n", help="Registered model name."),
    description: str | None = typer.Option(None, "--description", "-d"),
    as_json: bool = typer.Option(False, "--json"),
    require_signature: bool = REQUIRE,
    trusted_key: list[str] | None = TRUSTED,
) -> None:
    """Register PACKAGE as a new version of NAME (checksums verified first)."""
    check_signature(package, require_signature, trusted_key)  # before the store is opened
    done = _registry().register(package, name, description)
    if as_json:
        print_json({**done.version.to_dict(), "created": done.created, "notes": done.warnings})
        return
    verb = "registered" if done.created else "already registered as"
    console().print(f"{verb} {done.version.name}/{done.version.version}")
    for note in done.warnings:
        console().print(f"note: {note}")


@app.command("list")
def list_models(as_json: bool = typer.Option(False, "--json")) -> None:
    """Registered models with their latest version and aliases."""
    models = _registry().models()
    if as_json:
        print_json(models)
        return
    from rich.table import Table

    table = Table("model", "versions", "latest", "aliases", "description")
    for m in models:
        aliases = ", ".join(f"{a} -> {v}" for a, v in sorted(m["aliases"].items()))
        table.add_row(m["name"], str(m["versions"]), str(m["latest"]), aliases, m["description"])
    console().print(table)


@app.command("show")
def show(
    ref: str = typer.Argument(..., help="N (its versions), N/V or N@ALIAS."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """One version (N/V, N@ALIAS) or every version of N."""
    from tuneserve.registry import Ref

    registry = _registry()
    parsed = Ref.parse(ref)
    versions = (
        [registry.version(parsed)]
        if parsed.version or parsed.alias
        else registry.versions(parsed.name)
    )
    if as_json:
        print_json([v.to_dict() for v in versions])
        return
    for v in versions:
        _print_version(v)


@app.command("compare")
def compare(
    name: str = typer.Argument(...),
    a: str = typer.Argument(..., help="First version."),
    b: str = typer.Argument(..., help="Second version."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Metrics of two versions side by side."""
    result = _registry().compare(name, a, b)
    if as_json:
        print_json(result)
        return
    from rich.table import Table

    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    table = Table("metric", f"{name}/{a}", f"{name}/{b}", "b - a")
    for row in result["metrics"]:
        delta = "-" if row["delta"] is None else f"{row['delta']:+.4f}"
        table.add_row(row["metric"], fmt(row["a"]), fmt(row["b"]), delta)
    console().print(table)
    if not result["same_data"]:
        console().print("note: the two versions were trained on different data")


@app.command("promote")
def promote(
    name: str = typer.Argument(...),
    version: str = typer.Argument(...),
    note: str = typer.Option("", "--note", help="Why, for the audit trail."),
) -> None:
    """Make VERSION the champion (its package must load); the change is audited."""
    v = _registry().promote(name, version, note)
    console().print(f"{v.name}/{v.version} is now the champion")


@app.command("rollback")
def rollback(
    name: str = typer.Argument(...),
    note: str = typer.Option("", "--note"),
) -> None:
    """Make the previous champion the champion again."""
    v = _registry().rollback(name, note)
    console().print(f"rolled back: {v.name}/{v.version} is the champion again")


@app.command("alias")
def alias(
    name: str = typer.Argument(...),
    alias_name: str = typer.Argument(..., metavar="ALIAS"),
    version: str = typer.Argument(...),
    note: str = typer.Option("", "--note"),
) -> None:
    """Point ALIAS (e.g. challenger) at VERSION; champion moves with promote."""
    _registry().set_alias(name, alias_name, version, note)
    console().print(f"{name}@{alias_name} -> {version}")


@app.command("history")
def history(name: str = typer.Argument(...), as_json: bool = typer.Option(False, "--json")) -> None:
    """The audit trail: who moved which alias, when, from which version to which."""
    entries = [e.to_dict() for e in _registry().history(name)]
    if as_json:
        print_json(entries)
        return
    from rich.table import Table

    table = Table("when", "who", "action", "alias", "from", "to", "note")
    for e in entries:
        table.add_row(
            e["when"], e["who"], e["action"], e["alias"], str(e["from"]), str(e["to"]), e["note"]
        )
    console().print(table)


@app.command("resolve")
def resolve(ref: str = typer.Argument(..., help="models:/N@champion, N/V, ...")) -> None:
    """Print the path of a verified local copy of the package REF names."""
    typer.echo(str(_registry().resolve(ref)))


@app.command("export")
def export(
    ref: str = typer.Argument(..., help="N (every version) or N/V."),
    out: Path = typer.Option(..., "--out", "-o", help="Bundle file (.tar) to write."),
    force: bool = typer.Option(False, "--force"),
) -> None:
    """Write a model (versions, metrics, lineage, aliases, audit trail) to a bundle."""
    from tuneserve.registry import export_bundle

    path = export_bundle(_registry(), ref, out, overwrite=force)
    console().print(f"wrote {path}")


@app.command("import")
def import_(
    bundle: Path = typer.Argument(..., help="Bundle from tuneserve registry export."),
    name: str | None = typer.Option(None, "--name", help="Register under this name instead."),
) -> None:
    """Register a bundle's versions into the current store."""
    from tuneserve.registry import import_bundle

    created = import_bundle(_registry(), bundle, name)
    console().print(f"imported {', '.join(created)}")
