"""The model registry on MLflow: versions, aliases, promote with an audit trail, rollback,
and resolving a reference to a verified local package."""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tuneserve.exceptions import InvalidInputError, NotFoundError, PackageError, TuneserveError
from tuneserve.home import tuneserve_home
from tuneserve.lineage import Lineage
from tuneserve.package import Package

from ._lock import model_lock
from ._records import NAME, AuditEntry, Ref, Registered, Version
from ._store import (
    RegistryError,
    Store,
    client,
    current_store,
    experiment_id,
    quiet_mlflow,
    store_failure,
)
from .tracking import (
    EPOCH_PREFIX,
    PACKAGE_TAG,
    end_dead_runs,
    find_run,
    track_package,
    training_params,
)

CHAMPION = "champion"
AUDIT_PREFIX = "tuneserve.audit."
#: The longest ``--note`` the audit trail keeps (an entry is one registered-model tag).
NOTE_LIMIT = 2000


def _who() -> str:
    user = os.environ.get("TUNESERVE_USER")
    if not user:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _error_code(exc: Exception) -> str:
    return str(getattr(exc, "error_code", ""))


#: Libraries whose exceptions mean "the store failed" (not a bug of ours).
_STORE_MODULES = (
    "mlflow",
    "sqlalchemy",
    "psycopg",
    "sqlite3",
    "alembic",
    "requests",
    "urllib3",
    "botocore",
    "boto3",
)


@contextmanager
def _mlflow_errors(store: Store) -> Iterator[None]:
    """MLflow and database failures as one-line :class:`RegistryError`s."""
    try:
        with quiet_mlflow():
            yield
    except TuneserveError:
        raise
    except Exception as exc:
        if type(exc).__module__.startswith(_STORE_MODULES) or isinstance(exc, OSError):
            raise store_failure(store, exc) from exc
        raise


def _check_note(note: str) -> None:
    if len(note) > NOTE_LIMIT:
        raise InvalidInputError(
            f"the note is {len(note):,} characters; the audit trail keeps at most "
            f"{NOTE_LIMIT:,}. Nothing was changed. Hint: put the long text in a ticket or a "
            "file and give its link or path as the note"
        )


def config_hash(lineage: Lineage) -> str:
    """A short hash of what a package was trained with (backbone, settings, split; not
    the history)."""
    kept = training_params(lineage)
    text = json.dumps(kept, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Registry:
    """Versions of named models in an MLflow model registry.

    Args:
        store: The MLflow store (default: ``MLFLOW_TRACKING_URI``, else the embedded SQLite
            store under ``$TUNESERVE_HOME/mlflow``).
        cache: Where resolved packages are kept (default ``$TUNESERVE_HOME/cache/registry``).
    """

    def __init__(self, store: Store | None = None, cache: str | Path | None = None) -> None:
        self.store = store or current_store()
        self.cache = Path(cache) if cache else tuneserve_home() / "cache" / "registry"
        with _mlflow_errors(self.store):
            self.client = client(self.store)

    # ---- reading -------------------------------------------------------------------------

    def models(self) -> list[dict[str, Any]]:
        """Every registered model: name, latest version, aliases and description."""
        found = self._all(
            lambda token: self.client.search_registered_models(max_results=1000, page_token=token)
        )
        out = []
        for model in sorted(found, key=lambda m: m.name):
            versions = self._version_numbers(model.name)
            if not versions:  # left by a register that died before its version: not a model
                continue
            out.append(
                {
                    "name": model.name,
                    "versions": len(versions),
                    "latest": versions[-1] if versions else None,
                    "aliases": {k: int(v) for k, v in (model.aliases or {}).items()},
                    "description": model.description or "",
                }
            )
        return out

    def _model(self, name: str) -> Any:
        if not NAME.match(name):
            raise TuneserveError(f"bad model name {name!r}; names use letters, digits, . _ -")
        with _mlflow_errors(self.store):
            try:
                return self.client.get_registered_model(name)
            except Exception as exc:
                if _error_code(exc) != "RESOURCE_DOES_NOT_EXIST":
                    raise
        known = ", ".join(m["name"] for m in self.models()) or "none yet"
        raise NotFoundError(
            f"no registered model named {name!r}; registered models: {known}. Hint: "
            "tuneserve registry register PACKAGE --name NAME"
        )

    def _version_numbers(self, name: str) -> list[int]:
        found = self._all(
            lambda token: self.client.search_model_versions(
                f"name = '{name}'", max_results=10000, page_token=token
            )
        )
        return sorted(int(v.version) for v in found)

    def _all(self, page: Any) -> list[Any]:
        """Every result of a paged MLflow search."""
        out: list[Any] = []
        token = None
        with _mlflow_errors(self.store):
            while True:
                batch = page(token)
                out.extend(batch)
                token = getattr(batch, "token", None)
                if not token:
                    return out

    def versions(self, name: str) -> list[Version]:
        """Every version of ``name``, oldest first."""
        self._model(name)
        return [self.version(Ref(name, str(v))) for v in self._version_numbers(name)]

    def version(self, ref: Ref | str) -> Version:
        """The version ``ref`` names (``N`` alone means its champion)."""
        ref = Ref.parse(ref) if isinstance(ref, str) else ref
        model = self._model(ref.name)
        aliases = {k: str(v) for k, v in (model.aliases or {}).items()}
        number = ref.version
        if ref.alias or not number:
            alias = ref.alias or CHAMPION
            if alias not in aliases:
                listed = ", ".join(f"{a} -> {v}" for a, v in sorted(aliases.items())) or "none"
                hint = (
                    f"tuneserve registry promote {ref.name} VERSION"
                    if alias == CHAMPION
                    else f"tuneserve registry alias {ref.name} {alias} VERSION"
                )
                raise NotFoundError(
                    f"model {ref.name!r} has no alias {alias!r}; its aliases: {listed}. "
                    f"Hint: {hint}"
                )
            number = aliases[alias]
        if not str(number).isdigit():
            raise TuneserveError(f"version must be a number, got {number!r} (model {ref.name})")
        with _mlflow_errors(self.store):
            try:
                mv = self.client.get_model_version(ref.name, number)
            except Exception as exc:
                if _error_code(exc) != "RESOURCE_DOES_NOT_EXIST":
                    raise
                mv = None
        if mv is None:
            existing = ", ".join(map(str, self._version_numbers(ref.name))) or "none"
            raise NotFoundError(
                f"model {ref.name!r} has no version {number}; its versions: {existing}"
            )
        metrics: dict[str, float] = {}
        if mv.run_id:
            with _mlflow_errors(self.store):
                try:
                    logged = self.client.get_run(mv.run_id).data.metrics
                    metrics = {k: v for k, v in logged.items() if not k.startswith(EPOCH_PREFIX)}
                except Exception as exc:
                    if _error_code(exc) != "RESOURCE_DOES_NOT_EXIST":
                        raise
        created = time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime((mv.creation_timestamp or 0) / 1000)
        )
        return Version(
            name=ref.name,
            version=str(mv.version),
            aliases=sorted(a for a, v in aliases.items() if v == str(mv.version)),
            package_id=mv.tags.get(PACKAGE_TAG, ""),
            description=mv.description or "",
            tags=dict(mv.tags),
            metrics=metrics,
            run_id=mv.run_id,
            source=mv.source,
            created=created,
        )

    def compare(self, name: str, a: str, b: str) -> dict[str, Any]:
        """Metrics of two versions side by side, with ``b - a`` for each shared metric."""
        va, vb = self.version(Ref(name, str(a))), self.version(Ref(name, str(b)))
        keys = sorted(set(va.metrics) | set(vb.metrics))
        rows = [
            {
                "metric": k,
                "a": va.metrics.get(k),
                "b": vb.metrics.get(k),
                "delta": (vb.metrics[k] - va.metrics[k])
                if k in va.metrics and k in vb.metrics
                else None,
            }
            for k in keys
        ]
        same_data = va.tags.get("tuneserve.data_fingerprint") == vb.tags.get(
            "tuneserve.data_fingerprint"
        )
        return {
            "name": name,
            "a": va.to_dict(),
            "b": vb.to_dict(),
            "metrics": rows,
            "same_data": same_data,
        }

    def history(self, name: str) -> list[AuditEntry]:
        """The audit trail of ``name``'s aliases, oldest first."""
        model = self._model(name)
        entries = []
        for key in sorted(k for k in (model.tags or {}) if k.startswith(AUDIT_PREFIX)):
            raw = json.loads(model.tags[key])
            entries.append(
                AuditEntry(
                    action=raw["action"],
                    alias=raw["alias"],
                    from_version=raw.get("from"),
                    to_version=raw.get("to"),
                    who=raw.get("who", ""),
                    when=raw.get("when", ""),
                    note=raw.get("note", ""),
                )
            )
        return entries

    # ---- writing -------------------------------------------------------------------------

    def register(
        self,
        package: str | Path | Package,
        name: str,
        description: str | None = None,
        trusted_keys: list[str] | None = None,
    ) -> Registered:
        """Register a package as a new version of ``name`` (created on first use).

        The package is verified first (checksums): a corrupted one is refused. A package
        already registered under ``name`` is not registered twice; its version is returned.
        The version carries lineage tags (package id, data fingerprint, parent package and,
        when the parent is registered, its version; config hash) and the metrics of the run
        that logged the package (reused when ``train`` tracked it, else created here). With
        ``trusted_keys``, only a package one of those public keys signed is registered
        (:mod:`tuneserve.signing`).
        """
        if not NAME.match(name):
            raise TuneserveError(
                f"model name {name!r} is not allowed; use letters, digits, '.', '_' and '-' "
                "(no '/' or '@', they separate versions and aliases), at most 128 characters"
            )
        if isinstance(package, Package):
            package.verify()
            pkg = package
        else:
            pkg = Package.load(package)  # checks every file's checksum
        if trusted_keys is not None:
            from tuneserve.signing import verify_signature

            verify_signature(pkg, trusted_keys)
        # under the model's lock, so that parallel registers of one package make one version
        with model_lock(self.store, name), _mlflow_errors(self.store):
            existing = self.client.search_model_versions(
                f"name = '{name}' and tags.`{PACKAGE_TAG}` = '{pkg.id}'"
            )
            if existing:
                version = self.version(Ref(name, str(existing[0].version)))
                return Registered(version, created=False, run_id=version.run_id or "")
            exp = experiment_id(self.client, self.store)
            end_dead_runs(self.client, exp)
            run_id = find_run(self.client, exp, pkg.id) or track_package(
                pkg, store=self.store, kind="register"
            )
            try:
                self.client.create_registered_model(name)
            except Exception as exc:
                if _error_code(exc) != "RESOURCE_ALREADY_EXISTS":
                    raise
            m = pkg.manifest
            tags = {
                PACKAGE_TAG: pkg.id,
                "tuneserve.task": m.task,
                "tuneserve.modality": m.modality,
                "tuneserve.data_fingerprint": m.lineage.data_fingerprint or "",
                "tuneserve.config_hash": config_hash(m.lineage),
                "tuneserve.backbone": (m.lineage.backbone.name if m.lineage.backbone else None)
                or "",
            }
            notes = []
            if m.lineage.parent:
                tags["tuneserve.parent_package"] = m.lineage.parent
                parents = self.client.search_model_versions(
                    f"tags.`{PACKAGE_TAG}` = '{m.lineage.parent}'"
                )
                if parents:
                    tags["tuneserve.parent_version"] = f"{parents[0].name}/{parents[0].version}"
                else:
                    notes.append(f"parent package {m.lineage.parent} is not registered")
            source = self.client.get_run(run_id).info.artifact_uri.rstrip("/") + "/package"
            mv = self.client.create_model_version(
                name,
                source,
                run_id=run_id,
                tags=tags,
                description=description or f"{m.name}: {m.task} on {m.modality} data",
            )
        return Registered(self.version(Ref(name, str(mv.version))), True, run_id, notes)

    def _audit_key(self, model: Any) -> str:
        """A key that sorts after every entry already on ``model``, even when this host's
        clock is behind the one that wrote the last entry."""
        last = max(
            (
                int(k[len(AUDIT_PREFIX) :].split("-")[0])
                for k in (model.tags or {})
                if k.startswith(AUDIT_PREFIX) and k[len(AUDIT_PREFIX) :].split("-")[0].isdigit()
            ),
            default=0,
        )
        return f"{AUDIT_PREFIX}{max(time.time_ns(), last + 1):020d}-{uuid.uuid4().hex[:8]}"

    def _alias_target(self, name: str, alias: str) -> str | None:
        return {k: str(v) for k, v in (self._model(name).aliases or {}).items()}.get(alias)

    def set_alias(self, name: str, alias: str, version: str | int, note: str = "") -> None:
        """Point ``alias`` at ``version`` (audited). ``champion`` moves only by promote."""
        if alias == CHAMPION:
            raise TuneserveError(
                f"the {CHAMPION!r} alias moves with promote (which checks the package loads "
                f"and keeps the audit trail): tuneserve registry promote {name} {version}"
            )
        _check_note(note)
        target = self.version(Ref(name, str(version)))
        with model_lock(self.store, name):
            self._move(name, alias, target.version, "alias", note)

    def _move(self, name: str, alias: str, version: str, action: str, note: str) -> None:
        """Record, then move: the caller holds the model's lock, so ``before`` is still the
        alias's target when the alias moves, and every entry's ``from`` is the previous
        entry's ``to``. An entry whose move failed is taken back."""
        model = self._model(name)
        before = {k: str(v) for k, v in (model.aliases or {}).items()}.get(alias)
        entry = AuditEntry(action, alias, before, version, _who(), _now(), note)
        key = self._audit_key(model)
        with _mlflow_errors(self.store):
            self.client.set_registered_model_tag(name, key, json.dumps(entry.to_dict()))
            try:
                self.client.set_registered_model_alias(name, alias, version)
            except BaseException:
                self.client.delete_registered_model_tag(name, key)
                raise

    def promote(self, name: str, version: str | int, note: str = "") -> Version:
        """Make ``version`` the champion, after checking that its package downloads,
        verifies and loads in the runtime; on failure the champion is unchanged."""
        ref = Ref(name, str(version))
        _check_note(note)
        if self._alias_target(name, CHAMPION) == str(version):
            raise TuneserveError(f"{name}/{version} is already the champion; nothing to do")
        try:
            path = self.resolve(ref)
            from tuneserve.runtime import Predictor

            Predictor(path)
        except NotFoundError:
            raise
        except TuneserveError as exc:
            current = self._alias_target(name, CHAMPION)
            raise RegistryError(
                f"version {version} of {name!r} cannot be promoted: its package does not load "
                f"({exc}). The champion stays {current or 'unset'}"
            ) from exc
        with model_lock(self.store, name):
            if self._alias_target(name, CHAMPION) == str(version):  # another promote won
                raise TuneserveError(f"{name}/{version} is already the champion; nothing to do")
            self._move(name, CHAMPION, self.version(ref).version, "promote", note)
        return self.version(ref)

    def rollback(self, name: str, note: str = "") -> Version:
        """Make the previous champion the champion again (audited as a rollback)."""
        _check_note(note)
        with model_lock(self.store, name):
            previous = self._previous_champion(name)
            self.version(Ref(name, previous))  # still there?
            self._move(name, CHAMPION, previous, "rollback", note)
        return self.version(Ref(name, previous))

    def _previous_champion(self, name: str) -> str:
        current = self._alias_target(name, CHAMPION)
        if current is None:
            raise NotFoundError(f"model {name!r} has no champion to roll back")
        previous = next(
            (
                e.from_version
                for e in reversed(self.history(name))
                if e.alias == CHAMPION
                and e.action == "promote"
                and e.to_version == current
                and e.from_version != current
            ),
            None,
        )
        if previous is None:
            raise RegistryError(
                f"model {name!r}: version {current} is the first champion on record; there is "
                "no earlier champion to roll back to"
            )
        return previous

    # ---- resolving -----------------------------------------------------------------------

    def resolve(self, ref: Ref | str) -> Path:
        """A verified local copy of the package ``ref`` names (downloaded once, cached).

        Raises:
            NotFoundError: unknown model, version or alias.
            ChecksumError: the stored package does not match its checksums.
            RegistryError: the package is not the one registered (another package id).
        """
        version = self.version(Ref.parse(ref) if isinstance(ref, str) else ref)
        target = self.cache / version.name / f"v{version.version}-{version.package_id}"
        package: Package | None = None
        if (target / "manifest.json").is_file():
            try:
                package = Package.load(target)  # checks every file's checksum
            except PackageError:  # a damaged cached copy: fetch it again
                shutil.rmtree(target, ignore_errors=True)
        if package is None:
            self._download(version, target)
            package = Package.load(target)  # a damaged stored artifact fails here
        if version.package_id and package.id != version.package_id:
            raise RegistryError(
                f"{version.name}/{version.version} should hold package {version.package_id}, "
                f"but its artifact is {package.id}. Hint: the artifact store was changed; "
                "register the package again"
            )
        return target

    def _download(self, version: Version, target: Path) -> None:
        from mlflow.artifacts import download_artifacts

        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.parent / f".{target.name}.tmp-{os.getpid()}-{time.time_ns()}"
        try:
            with _mlflow_errors(self.store):
                got = download_artifacts(
                    artifact_uri=version.source,
                    dst_path=str(staging),
                    tracking_uri=self.store.uri,
                )
            try:
                os.replace(got, target)
            except OSError:
                if not (target / "manifest.json").is_file():  # another process won the race
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def resolve(ref: str) -> Path:
    """A verified local package for ``models:/N@alias``, ``N/V`` or ``N`` (its champion),
    from the store in force (``MLFLOW_TRACKING_URI`` or the embedded one)."""
    return Registry().resolve(ref)
