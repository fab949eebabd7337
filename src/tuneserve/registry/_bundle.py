"""Move registered models between stores: ``export N[/V] --out bundle.tar``, then
``import bundle.tar`` into another ``TUNESERVE_HOME`` or MLflow server.

A bundle is a tar file: ``bundle.json`` (the model's description, tags and audit trail,
aliases, and per version its description, tags, metrics and parameters) and each version's
package under ``versions/<V>/package/``. Import re-registers the versions in order, maps
aliases, lineage and the audit trail to the new version numbers, and records where each
version came from (``tuneserve.imported_from``).
"""

from __future__ import annotations

import json
import os
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from tuneserve.exceptions import DataError, InvalidInputError, NotFoundError, PackageError
from tuneserve.package import Package

from ._records import Ref
from ._registry import AUDIT_PREFIX, CHAMPION, Registry, _mlflow_errors
from .tracking import PACKAGE_TAG

BUNDLE_FORMAT = 1
MANIFEST = "bundle.json"


def export_bundle(registry: Registry, ref: str, out: str | Path, overwrite: bool = False) -> Path:
    """Write model ``ref`` (all versions) or ``ref`` = ``N/V`` (one version) to a tar file."""
    parsed = Ref.parse(ref)
    model = registry._model(parsed.name)
    if parsed.alias:
        parsed = Ref(parsed.name, registry.version(parsed).version)
    versions = [registry.version(parsed)] if parsed.version else registry.versions(parsed.name)
    kept = {v.version for v in versions}
    target = Path(out).expanduser()
    if target.exists() and not overwrite:
        raise PackageError(f"{target} already exists. Hint: pass --force to replace it")
    meta: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "name": parsed.name,
        "description": model.description or "",
        "tags": dict(model.tags or {}),
        "aliases": {a: str(v) for a, v in (model.aliases or {}).items() if str(v) in kept},
        "versions": [],
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        with tarfile.open(tmp, "w") as tar:
            for v in versions:
                path = registry.resolve(Ref(v.name, v.version))
                params: dict[str, str] = {}
                if v.run_id:
                    with _mlflow_errors(registry.store):
                        params = dict(registry.client.get_run(v.run_id).data.params)
                meta["versions"].append(
                    {
                        "version": v.version,
                        "description": v.description,
                        "tags": v.tags,
                        "metrics": v.metrics,
                        "params": params,
                        "package": f"versions/{v.version}/package",
                    }
                )
                tar.add(path, arcname=f"versions/{v.version}/package")
            data = json.dumps(meta, indent=2).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size = len(data)
            import io

            tar.addfile(info, io.BytesIO(data))
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _safe_extract(path: Path, folder: Path) -> None:
    """Extract regular files and folders only, each inside ``folder``."""
    try:
        with tarfile.open(path) as tar:
            members = tar.getmembers()
            for member in members:
                target = (folder / member.name).resolve()
                if not (member.isfile() or member.isdir()) or not target.is_relative_to(
                    folder.resolve()
                ):
                    raise DataError(
                        f"{path} holds {member.name!r}, which is not a plain file inside the "
                        "bundle; refusing it"
                    )
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: the library checks too
                tar.extractall(folder, members=members, filter="data")
            else:
                tar.extractall(folder, members=members)  # checked above
    except (tarfile.TarError, OSError) as exc:
        raise DataError(f"{path} is not a tuneserve bundle: {exc}") from exc


def _read_meta(path: Path, root: Path) -> dict[str, Any]:
    try:
        meta = json.loads((root / MANIFEST).read_text())
        versions = meta["versions"]
        for entry in versions:
            package = (root / entry["package"]).resolve()
            if not package.is_relative_to(root.resolve()):
                raise DataError(f"{path}: version {entry['version']} points outside the bundle")
            entry.setdefault("tags", {})
            entry.setdefault("metrics", {})
            entry.setdefault("params", {})
            entry.setdefault("description", "")
        if not isinstance(meta["name"], str):
            raise TypeError("the model name is not a string")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path} is not a tuneserve bundle: bad {MANIFEST} ({exc})") from exc
    if meta.get("format") != BUNDLE_FORMAT:
        raise DataError(
            f"{path} is bundle format {meta.get('format')}; this tuneserve reads "
            f"{BUNDLE_FORMAT}. Hint: upgrade tuneserve"
        )
    return dict(meta)


#: Tags that describe where a version sits in its own store: set anew on import.
_LOCAL_TAGS = {PACKAGE_TAG, "tuneserve.parent_version", "tuneserve.imported_from"}


def import_bundle(registry: Registry, bundle: str | Path, name: str | None = None) -> list[str]:
    """Register the versions of a bundle into ``registry`` under ``name`` (default: the
    bundle's); returns ``["N/V", ...]`` of the new versions. The target model must not
    exist yet (no version numbers are overwritten or mixed); if the import fails half way,
    the half-made model is removed again."""
    path = Path(bundle).expanduser()
    if not path.is_file():
        raise DataError(f"bundle {path} not found")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        _safe_extract(path, root)
        meta = _read_meta(path, root)
        name = name or meta["name"]
        try:
            registry._model(name)
        except NotFoundError:
            pass
        else:
            raise InvalidInputError(
                f"model {name!r} already exists in {registry.store.uri}; import under another "
                "name with --name NEW"
            )
        packages = [Package.load(root / v["package"]) for v in meta["versions"]]  # verified
        try:
            return _register_all(registry, meta, packages, name)
        except BaseException:
            with _mlflow_errors(registry.store):
                registry.client.delete_registered_model(name)
            raise


def _register_all(
    registry: Registry, meta: dict[str, Any], packages: list[Package], name: str
) -> list[str]:
    mapping: dict[str, str] = {}
    created = []
    for entry, package in zip(meta["versions"], packages, strict=True):
        done = registry.register(package, name, description=entry["description"] or None)
        new = done.version.version
        mapping[str(entry["version"])] = new
        created.append(f"{name}/{new}")
        with _mlflow_errors(registry.store):
            if done.run_id:
                _log_missing(registry, done.run_id, entry)
            tags = {
                k: v
                for k, v in entry["tags"].items()
                if k.startswith("tuneserve.") and k not in _LOCAL_TAGS
            }
            tags["tuneserve.imported_from"] = f"{meta['name']}/{entry['version']}"
            parent = entry["tags"].get("tuneserve.parent_version", "")
            parent_name, _, parent_version = parent.partition("/")
            if parent_name == meta["name"] and parent_version in mapping:
                tags["tuneserve.parent_version"] = f"{name}/{mapping[parent_version]}"
            for key, value in tags.items():
                registry.client.set_model_version_tag(name, new, key, value)
    with _mlflow_errors(registry.store):
        if meta.get("description"):
            registry.client.update_registered_model(name, meta["description"])
        for key, value in meta.get("tags", {}).items():
            if key.startswith(AUDIT_PREFIX):
                value = _remap_audit(value, mapping)
            registry.client.set_registered_model_tag(name, key, value)
        for alias, version in meta.get("aliases", {}).items():
            if str(version) in mapping:
                registry.client.set_registered_model_alias(name, alias, mapping[str(version)])
    return created


def _log_missing(registry: Registry, run_id: str, entry: dict[str, Any]) -> None:
    """Give a run created at import the bundle's metrics and parameters."""
    from mlflow.entities import Metric, Param

    run = registry.client.get_run(run_id)
    metrics = [
        Metric(k, float(v), 0, 0) for k, v in entry["metrics"].items() if k not in run.data.metrics
    ]
    params = [Param(k, v) for k, v in entry["params"].items() if k not in run.data.params]
    for start in range(0, max(len(metrics), len(params), 1), 100):
        registry.client.log_batch(
            run_id, metrics=metrics[start : start + 100], params=params[start : start + 100]
        )


def _remap_audit(value: str, mapping: dict[str, str]) -> str:
    """An audit entry with the new version numbers; a version that was not imported
    becomes None, named in the note."""
    raw = json.loads(value)
    for key in ("from", "to"):
        old = raw.get(key)
        if old is not None:
            raw[key] = mapping.get(str(old))
            if raw[key] is None:
                raw["note"] = f"{raw.get('note', '')} ({key} version {old} not imported)".strip()
    return json.dumps(raw)


__all__ = ["CHAMPION", "export_bundle", "import_bundle"]
