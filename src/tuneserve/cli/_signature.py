"""The ``--require-signature`` / ``--trusted-key`` options that commands share."""

from __future__ import annotations

from pathlib import Path

import typer

REQUIRE = typer.Option(
    False,
    "--require-signature",
    help="Refuse a package unless a --trusted-key signed it (tuneserve package sign).",
)
TRUSTED = typer.Option(
    None, "--trusted-key", help="A trusted public key (KEY.pub); repeat for several."
)


def check_signature(package: str | Path, require: bool, trusted: list[str] | None) -> None:
    """Verify ``package``'s signature when asked: ``--require-signature``, or any
    ``--trusted-key`` (a trusted key given is a key to check against)."""
    if not require and not trusted:
        return
    from tuneserve.signing import verify_signature

    verify_signature(package, trusted or [])
