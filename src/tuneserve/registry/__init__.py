"""The model registry and run tracking, on MLflow.

``Registry`` keeps versions of named models with aliases (``champion``, ``challenger``),
an audit trail of promotions and rollbacks, and resolves ``models:/N@champion`` to a
verified local package. ``track_package`` logs a training run. ``export_bundle`` and
``import_bundle`` move models between stores.
"""

from ._bundle import export_bundle, import_bundle
from ._records import AuditEntry, Ref, Registered, Version
from ._registry import CHAMPION, Registry, resolve
from ._store import RegistryError, Store, StoreUnavailableError, current_store
from .tracking import track_package, tracking_enabled, training_report

__all__ = [
    "CHAMPION",
    "AuditEntry",
    "Ref",
    "Registered",
    "Registry",
    "RegistryError",
    "Store",
    "StoreUnavailableError",
    "Version",
    "current_store",
    "export_bundle",
    "import_bundle",
    "resolve",
    "track_package",
    "tracking_enabled",
    "training_report",
]
