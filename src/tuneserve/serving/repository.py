"""The models a server holds: loaded from the registry (``N``, ``N@alias``, ``N/V``) or
from a package folder, each with its own batcher."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from tuneserve.exceptions import InvalidInputError, NotFoundError
from tuneserve.runtime import Predictor

from .batcher import Batcher, Items
from .decode import InputSchema

if TYPE_CHECKING:  # the registry imports MLflow: loaded on first use, not with the server
    from tuneserve.registry import Registry


@dataclass
class ServedModel:
    """One loaded version of a model; ``inputs`` is what it takes, read from its manifest."""

    name: str
    version: str
    source: str
    predictor: Predictor
    batcher: Batcher
    inputs: InputSchema = field(init=False)

    def __post_init__(self) -> None:
        self.inputs = InputSchema.of(self.predictor.manifest)


@dataclass(frozen=True)
class ModelSpec:
    """What ``--model`` names: a registry reference or a package folder (``NAME=PATH``
    gives a folder a name; by default its folder name)."""

    name: str
    ref: str | None = None
    path: Path | None = None

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        name, sep, rest = text.partition("=")
        candidate = Path(rest if sep else text).expanduser()
        if (candidate / "manifest.json").is_file():
            return cls(name=name if sep else candidate.name, path=candidate)
        from tuneserve.registry import Ref

        ref = Ref.parse(rest if sep else text)
        return cls(name=name if sep else ref.name, ref=str(ref))


@dataclass
class BatchSettings:
    max_batch_size: int = 32
    max_queue_delay_ms: float = 2.0
    max_queue: int = 1024


class Repository:
    """Named models, each at one current version (older loaded versions stay pinnable)."""

    def __init__(
        self,
        specs: list[ModelSpec],
        settings: BatchSettings | None = None,
        on_batch: Callable[[str, int, list[float]], None] | None = None,
        intra_op_threads: int | None = None,
        trusted_keys: list[str] | None = None,
    ) -> None:
        if not specs:
            raise InvalidInputError("serve at least one model: --model NAME[@ALIAS] or a path")
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise InvalidInputError(f"two --model options share a name: {names}")
        self.specs = {s.name: s for s in specs}
        self.settings = settings or BatchSettings()
        self.on_batch = on_batch
        self.intra_op_threads = intra_op_threads
        #: When set, a version loads only if one of these public keys signed it.
        self.trusted_keys = trusted_keys
        #: One thread per model: a slow model holds only its own queue, never another's.
        self.executors: dict[str, ThreadPoolExecutor] = {}
        self._lock = threading.Lock()
        self._loading = threading.Lock()  # one load or reload at a time
        self.versions: dict[str, dict[str, ServedModel]] = {}
        self.current: dict[str, str] = {}
        #: Swaps done by :meth:`refresh`, and the last load error per model (None: fine).
        self.swaps = 0
        self.errors: dict[str, str | None] = {}
        self.registry: Registry | None = None

    def _registry(self) -> Registry:
        """One registry client for every load and alias check (made on first use)."""
        if self.registry is None:
            from tuneserve.registry import Registry

            self.registry = Registry()
        return self.registry

    def load_all(self) -> None:
        for name in self.specs:
            self.load(name)

    def _resolve(self, spec: ModelSpec) -> tuple[str, Path]:
        if spec.path is not None:
            return "1", spec.path
        registry = self._registry()
        assert spec.ref is not None
        version = registry.version(spec.ref)
        return version.version, registry.resolve(f"{version.name}/{version.version}")

    def load(self, name: str) -> ServedModel:
        """Load the version ``name``'s spec points at now, warm it up and make it current
        (one atomic swap). If it fails to load, the current version stays and the error is
        kept in :attr:`errors`."""
        spec = self.specs.get(name)
        if spec is None:
            raise NotFoundError(f"model {name!r} is not configured; configured: {self.listed}")
        with self._loading:
            try:
                served = self._load(name, spec)
            except Exception as exc:
                self.errors[name] = f"{type(exc).__name__}: {exc}"
                raise
            self.errors[name] = None
            return served

    def refresh(self, name: str) -> bool:
        """Follow ``name``'s alias: load and swap in the version it points at now, if that
        changed. True when a new version was swapped in; a failure leaves the old one
        serving (the error is in :attr:`errors`)."""
        spec = self.specs[name]
        if spec.ref is None:
            return False
        try:
            wanted = self._registry().version(spec.ref).version
        except Exception as exc:
            self.errors[name] = f"{type(exc).__name__}: {exc}"
            return False
        if wanted == self.current.get(name):
            return False
        try:
            self.load(name)
        except Exception:
            return False
        self.swaps += 1
        return True

    def _load(self, name: str, spec: ModelSpec) -> ServedModel:
        version, path = self._resolve(spec)
        existing = self.versions.get(name, {}).get(version)
        if existing is None:
            if self.trusted_keys is not None:  # an unsigned new champion is refused, and the
                from tuneserve.signing import verify_signature  # current version stays

                verify_signature(path, self.trusted_keys)
            predictor = Predictor(path, intra_op_threads=self.intra_op_threads)
            predictor.run([warm_up_input(predictor)])  # the first real request is not slow

            def observe(size: int, waits: list[float], _n: str = name) -> None:
                if self.on_batch:
                    self.on_batch(_n, size, waits)

            # Predictor.run types its inputs as a Sequence; an array of rows is one
            run = cast(Callable[[Items], np.ndarray], predictor.run)
            batcher = Batcher(
                run,
                max_batch_size=self.settings.max_batch_size,
                max_queue_delay_ms=self.settings.max_queue_delay_ms,
                max_queue=self.settings.max_queue,
                executor=self.executors.setdefault(
                    name, ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"ort-{name}")
                ),
                on_batch=observe,
            )
            existing = ServedModel(name, version, spec.ref or str(path), predictor, batcher)
        with self._lock:  # one atomic swap: requests see the old or the new version
            self.versions.setdefault(name, {})[version] = existing
            self.current[name] = version
        return existing

    def unload(self, name: str) -> None:
        if name not in self.current:
            raise NotFoundError(f"model {name!r} is not loaded; loaded: {self.listed}")
        with self._lock:
            self.current.pop(name)
            self.versions.pop(name, None)

    @property
    def names(self) -> list[str]:
        return sorted(self.current)

    @property
    def listed(self) -> str:
        return ", ".join(self.names) or "none"

    def get(self, name: str, version: str | None = None) -> ServedModel:
        with self._lock:
            versions = self.versions.get(name)
            current = self.current.get(name)
        if not versions or current is None:
            raise NotFoundError(f"no model named {name!r} is served; served: {self.listed}")
        chosen = version or current
        if chosen not in versions:
            raise NotFoundError(
                f"model {name!r} has no loaded version {chosen!r}; loaded: {sorted(versions)}"
            )
        return versions[chosen]


def warm_up_input(predictor: Predictor) -> Any:
    """One valid raw input for a package, built from its input schema."""
    schema = predictor.manifest.input_schema
    if schema["type"] == "text":
        return "warm up"
    if schema["type"] == "image":
        return np.zeros((schema["height"], schema["width"], schema["channels"]), np.float32)
    return {
        c["name"]: (c.get("categories") or [""])[0] if c["type"] == "string" else 0.0
        for c in schema["columns"]
    }
