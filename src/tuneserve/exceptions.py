"""The one exception tree of tuneserve.

Every error a user can cause derives from :class:`TuneserveError`. Messages state the rule,
the value that broke it, and how to fix it. The CLI prints them as one line; the HTTP layer
maps them to status codes in one place (``InvalidInputError`` -> 400, ``NotFoundError`` -> 404).
"""

from __future__ import annotations

__all__ = [
    "ChecksumError",
    "DataError",
    "ExportError",
    "InputItemError",
    "InvalidInputError",
    "NotFittedError",
    "NotFoundError",
    "OutOfMemoryError",
    "PackageError",
    "PackageFormatError",
    "TrainingDivergedError",
    "TuneserveError",
    "UnavailableError",
]


class TuneserveError(Exception):
    """Base class of every error tuneserve raises on purpose."""


class InvalidInputError(TuneserveError, ValueError):
    """An argument or an input to predict is malformed (HTTP 400)."""


class InputItemError(InvalidInputError):
    """One item of a batch is bad; ``index`` is its position, so callers that split a
    request into batches can report the position in the whole request (``shifted``)."""

    def __init__(self, kind: str, index: int, problem: str) -> None:
        self.kind, self.index, self.problem = kind, index, problem
        super().__init__(f"{kind} {index} {problem}")

    def shifted(self, offset: int) -> InputItemError:
        """The same error with ``index`` moved by ``offset``."""
        return InputItemError(self.kind, self.index + offset, self.problem)


class NotFittedError(TuneserveError, RuntimeError):
    """A preprocessor or model was used before ``fit``."""


class OutOfMemoryError(TuneserveError, MemoryError):
    """Training ran out of memory; the message names a batch size to try."""


class TrainingDivergedError(TuneserveError):
    """The training loss became NaN or infinite."""


class NotFoundError(TuneserveError, FileNotFoundError):
    """A path, data set, model or version does not exist (HTTP 404)."""


class DataError(InvalidInputError):
    """A data set cannot be used as given: missing column, single class, NaN labels..."""


class PackageError(TuneserveError):
    """A model package cannot be written or read."""


class PackageFormatError(PackageError):
    """The manifest is missing, malformed, or from a newer format version."""


class ChecksumError(PackageError):
    """A file in a package does not match the checksum recorded in its manifest."""


class UnavailableError(TuneserveError):
    """A service tuneserve relies on cannot serve now (a full queue, a store that is down
    or damaged): the fault is not the request's (HTTP 503)."""


class ExportError(TuneserveError):
    """A model could not be exported, or the exported graph disagrees with the original."""
