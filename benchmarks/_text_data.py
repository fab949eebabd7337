"""A real 10-class text task built offline: the first sentence of docstrings, labeled by the
library they come from.

No text data set ships on disk, and the machine is offline; the libraries installed in the
venv are real, human-written English, with a label that is not trivial to read off (many
libraries "Return the ..." something). Each class draws from the public functions and
classes of a few modules of one library, and their public methods, keeping first
paragraphs of 20 to 300 characters, deduplicated across the whole set (a sentence two
libraries share, such as an inherited docstring, is dropped from both).

Used by ``benchmarks/train_vs_trainer.py`` and the slow test of the ``auto`` strategy.
"""

from __future__ import annotations

import importlib
import inspect
import warnings
from collections import Counter

import numpy as np

#: Library label -> modules whose public members are read.
LIBRARIES: dict[str, tuple[str, ...]] = {
    "numpy": ("numpy", "numpy.linalg", "numpy.random", "numpy.fft", "numpy.ma"),
    "pandas": ("pandas", "pandas.api.types", "pandas.core.frame", "pandas.core.series"),
    "sklearn": (
        "sklearn.metrics",
        "sklearn.linear_model",
        "sklearn.preprocessing",
        "sklearn.cluster",
        "sklearn.model_selection",
        "sklearn.decomposition",
    ),
    "scipy": ("scipy.stats", "scipy.optimize", "scipy.signal", "scipy.sparse", "scipy.special"),
    "torch": ("torch", "torch.nn", "torch.nn.functional", "torch.linalg", "torch.optim"),
    "matplotlib": ("matplotlib.pyplot", "matplotlib.axes", "matplotlib.colors"),
    "mlflow": ("mlflow", "mlflow.tracking", "mlflow.models", "mlflow.entities"),
    "pydantic": ("pydantic", "pydantic.fields", "pydantic.main", "pydantic.types"),
    "rich": ("rich.console", "rich.table", "rich.progress", "rich.text", "rich.panel"),
    "transformers": (
        "transformers.tokenization_utils_base",
        "transformers.modeling_utils",
        "transformers.trainer",
        "transformers.training_args",
        "transformers.configuration_utils",
        "transformers.pipelines",
    ),
}


def _first_paragraph(obj: object) -> str | None:
    try:
        doc = inspect.getdoc(obj)
    except Exception:  # some objects raise on attribute access
        return None
    if not doc:
        return None
    first = " ".join(doc.strip().split("\n\n")[0].split())
    return first if 20 <= len(first) <= 300 else None


def _sentences(modules: tuple[str, ...]) -> set[str]:
    found: set[str] = set()
    for module_name in modules:
        module = importlib.import_module(module_name)
        for name in sorted(dir(module)):
            if name.startswith("_"):
                continue
            try:
                obj = getattr(module, name)
            except Exception:
                continue
            if not callable(obj):
                continue
            if (text := _first_paragraph(obj)) is not None:
                found.add(text)
            if inspect.isclass(obj):
                for member_name, member in sorted(vars(obj).items()):
                    public = not member_name.startswith("_") and callable(member)
                    if public and (text := _first_paragraph(member)) is not None:
                        found.add(text)
    return found


def docstring_sentences() -> dict[str, list[str]]:
    """Every library's usable sentences, sorted; a sentence found in two libraries is left
    out of both (it says nothing about its label)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation notices of the libraries walked
        per_library = {lib: _sentences(modules) for lib, modules in LIBRARIES.items()}
    counts = Counter(s for found in per_library.values() for s in found)
    return {lib: sorted(s for s in found if counts[s] == 1) for lib, found in per_library.items()}


def docstring_dataset(per_class: int, seed: int = 0, libraries: int = 10):
    """A :class:`tuneserve.data.Dataset` of ``per_class`` sentences of each of the first
    ``libraries`` libraries, drawn at random (seeded).

    Raises:
        ValueError: a library has fewer than ``per_class`` sentences.
    """
    from tuneserve.data import Dataset

    rng = np.random.default_rng(seed)
    chosen = dict(list(docstring_sentences().items())[:libraries])
    texts: list[str] = []
    labels: list[int] = []
    for code, (lib, sentences) in enumerate(chosen.items()):
        if len(sentences) < per_class:
            raise ValueError(
                f"{lib} has {len(sentences)} usable docstring sentences, fewer than "
                f"per_class={per_class}; lower it"
            )
        picked = rng.permutation(len(sentences))[:per_class]
        texts += [sentences[i] for i in sorted(picked)]
        labels += [code] * per_class
    return Dataset(
        name=f"docstrings-{len(chosen)}",
        modality="text",
        task="classification",
        X=texts,
        y=np.array(labels),
        label_names=tuple(chosen),
        source="first sentences of python docstrings, labeled by library",
    )


if __name__ == "__main__":
    for lib, sentences in docstring_sentences().items():
        print(f"{lib:14s} {len(sentences):5d}  e.g. {sentences[len(sentences) // 2][:70]!r}")
