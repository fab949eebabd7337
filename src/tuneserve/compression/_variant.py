"""Write a compressed variant whose model is a transformed copy of its parent's graph
(post-training quantization, FP16, a shorter maximum sequence length): the parent's
manifest with the new graph, its lineage continued by a :class:`Compression` step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneserve.exceptions import InvalidInputError
from tuneserve.lineage import next_compression
from tuneserve.package import FORMAT_VERSION, Package

__all__ = ["write_graph_variant"]


def write_graph_variant(
    parent: Package,
    out: str | Path,
    *,
    method: str,
    graph: bytes | None = None,
    settings: dict[str, Any] | None = None,
    details: dict[str, Any] | None = None,
    preprocessing: dict[str, Any] | None = None,
    input_schema: dict[str, Any] | None = None,
    parity_max_abs_diff: float | None = None,
    overwrite: bool = False,
) -> Package:
    """Write ``parent`` with ``graph`` (ONNX bytes; default: the parent's own) and, where
    given, new ``preprocessing`` and ``input_schema``, as a package at ``out``.

    The variant keeps the parent's labels, preprocessing assets and lineage (split, held-out
    rows, backbone), with ``parent`` set to the parent's id and ``compression`` to this
    step. Its metrics are not the parent's: they are measured anew by the caller. The
    parent's ``extras/`` (torch weights, TorchScript) are not copied: they hold the
    uncompressed model, and a training-based method cannot continue from a quantized graph.

    Raises:
        InvalidInputError: ``parent`` is an ensemble (compress its members instead).
    """
    from tuneserve.ensemble_package import is_ensemble

    if is_ensemble(parent.manifest):
        raise InvalidInputError(
            f"package {parent.path} is an ensemble; compress its member packages one by one"
        )
    manifest = parent.manifest
    lineage = manifest.lineage.model_copy(
        update={
            "parent": parent.id,
            "compression": next_compression(parent.id, manifest.lineage, method, settings, details),
        }
    )
    graph_info = manifest.graph.model_copy(update={"parity_max_abs_diff": parity_max_abs_diff})
    new = manifest.model_copy(
        update={
            "format_version": FORMAT_VERSION,
            "name": Path(out).name,
            "lineage": lineage,
            "graph": graph_info,
            "metrics": {},
            "files": {},
            "package_id": "",
            "preprocessing": preprocessing or manifest.preprocessing,
            "input_schema": input_schema or manifest.input_schema,
        },
        deep=True,
    )
    files: dict[str, bytes | Path] = {
        manifest.graph.file: graph if graph is not None else parent.graph_path
    }
    for relative in manifest.files:
        if relative.startswith("assets/"):
            files[relative] = parent.path / relative
    return Package.write(out, new, files, overwrite=overwrite)
