"""A request's inputs, decoded into what a :class:`~tuneserve.runtime.Predictor` takes, by
modality, for both APIs; and how the Open Inference Protocol model metadata describes them.

Requests carry raw inputs, never preprocessed tensors, so any client can call any package.

Simple JSON (``{"inputs": [...]}``): strings for text, row objects or lists for tables
(passed on as they are), base64 image files or nested pixel lists for images.

Open Inference Protocol tensors:
  * text: one ``BYTES`` tensor of shape ``[n]`` (UTF-8 strings);
  * images: ``BYTES [n]`` encoded image files (PNG, JPEG, ...), or ``UINT8`` / ``FP32``
    pixels ``[n, h, w]`` or ``[n, h, w, c]`` (0-255 or 0-1);
  * tables, in either of two forms:

    - one tensor per column, named as the column, shape ``[n]``: numbers (any numeric
      datatype) or ``BYTES`` (strings, also numbers written as text);
    - when every column is a number, one ``FP32`` or ``FP64`` tensor of shape
      ``[n, n_columns]``, the columns in the order of the metadata's inputs, under any
      name that is not a column's. This is what KServe's scikit-learn server and
      MLServer's scikit-learn runtime take (their clients name it e.g. ``input-0``).

  Either way the rows become one 2-D array in model column order, built column by column
  (float64 when every column is a number, else Python values), never a dict per row.

Bad input raises :class:`~tuneserve.exceptions.InvalidInputError` (HTTP 400) naming the
rule, the value that broke it and the fix.
"""

from __future__ import annotations

import base64
import reprlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from tuneserve.exceptions import InvalidInputError
from tuneserve.package import Manifest

from .batcher import Items
from .oip import Tensor

__all__ = ["MATRIX_INPUT", "InputSchema", "from_json", "from_tensors", "metadata_inputs"]

#: The name the model metadata gives the one-tensor form of an all-number table.
MATRIX_INPUT = "input"
#: Datatypes of the one-tensor table form.
MATRIX_DATATYPES = ("FP32", "FP64")


@dataclass(frozen=True)
class InputSchema:
    """What a package takes as raw input, read once from its manifest's ``input_schema``:
    the modality and, for a table, the columns in order and which of them are numbers."""

    modality: str
    columns: tuple[str, ...] = ()
    numeric: tuple[bool, ...] = ()

    @classmethod
    def of(cls, manifest: Manifest) -> InputSchema:
        if manifest.modality != "table":
            return cls(manifest.modality)
        columns = manifest.input_schema["columns"]
        return cls(
            "table",
            tuple(str(c["name"]) for c in columns),
            tuple(c["type"] == "number" for c in columns),
        )

    @property
    def all_numeric(self) -> bool:
        """Every column is a number: the one-tensor ``[n, n_columns]`` form is accepted."""
        return all(self.numeric)

    @property
    def string_columns(self) -> list[str]:
        return [c for c, number in zip(self.columns, self.numeric, strict=True) if not number]


# ---- simple JSON --------------------------------------------------------------------


def from_json(schema: InputSchema, inputs: list[Any]) -> Items:
    """The simple JSON API's ``inputs`` list: image strings and pixel lists decoded; texts
    checked to be valid Unicode strings and table cells to be single values, so a bad item
    fails its own request before it is batched with others (the table preprocessor checks
    the rest of a row)."""
    if schema.modality == "image":
        return [_image(x, i) for i, x in enumerate(inputs)]
    if schema.modality == "text":
        for i, text in enumerate(inputs):
            if not isinstance(text, str):
                raise InvalidInputError(
                    f"text {i} is a {type(text).__name__}, not a string; send strings"
                )
            _check_text(text, f"text {i}")
    else:
        for i, row in enumerate(inputs):
            _check_row(schema, row, i)
    return inputs


def _check_text(text: str, where: str) -> None:
    """Refuse a string that is not valid Unicode (a lone surrogate, which JSON's ``\\ud800``
    escape can carry): the tokenizer and UTF-8 encoding both fail on it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError(
            f"{where} holds a lone surrogate {text[exc.start]!r} at character {exc.start}, "
            "which is not valid Unicode; send UTF-8 text (a \\uD800-\\uDFFF escape in JSON "
            "must be one half of a pair)"
        ) from None


def _check_row(schema: InputSchema, row: Any, index: int) -> None:
    """A table row's cells are single values (number, string, boolean or null): a list or an
    object in a cell would reach the preprocessor as extra rows or columns."""
    if isinstance(row, dict):
        cells = list(row.items())
    elif isinstance(row, list):
        cells = [
            (schema.columns[j] if j < len(schema.columns) else j, v) for j, v in enumerate(row)
        ]
    else:
        return  # the table preprocessor names what a row must be
    for column, value in cells:
        if isinstance(value, list | dict):
            raise InvalidInputError(
                f"row {index} column {column!r} holds a {type(value).__name__} "
                f"({reprlib.repr(value)}); a table cell is one number, string, boolean or "
                "null. Hint: send one value per column"
            )


def _image(value: Any, index: int) -> Any:
    """A JSON image: a base64 string of an image file, or nested pixel lists."""
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except ValueError:
            raise InvalidInputError(
                f"inputs[{index}] is a string but not base64; send an image file as base64 or "
                "pixels as nested lists"
            ) from None
    if isinstance(value, list):
        try:
            pixels = np.asarray(value, dtype=np.float64)
        except (ValueError, TypeError, OverflowError):
            raise InvalidInputError(
                f"inputs[{index}] is not a rectangular array of numbers"
            ) from None
        # NaN, infinity, or a number float32 cannot hold (the cast would overflow)
        if not np.all(np.abs(pixels) <= np.finfo(np.float32).max):
            raise InvalidInputError(
                f"inputs[{index}] holds a pixel value that is not a finite 32-bit float "
                "(NaN, Infinity or beyond 3.4e38); send pixels 0-255 or 0-1"
            )
        return pixels.astype(np.float32)
    raise InvalidInputError(f"inputs[{index}] must be base64 image bytes or a pixel array")


# ---- Open Inference Protocol tensors ------------------------------------------------


def from_tensors(schema: InputSchema, tensors: list[Tensor]) -> Items:
    """The raw inputs of an infer request's tensors (see the module docstring)."""
    if schema.modality == "table":
        return _table(schema, tensors)
    if len(tensors) != 1:
        raise InvalidInputError(
            f"a {schema.modality} model takes one input tensor; got {[t.name for t in tensors]}"
        )
    (tensor,) = tensors
    if tensor.values.size == 0:
        raise InvalidInputError(
            f"input {tensor.name!r} has shape {tensor.shape}: no inputs; send at least one"
        )
    if tensor.datatype == "BYTES":
        values = list(tensor.values.reshape(-1))
        if schema.modality == "text":
            try:
                return [v.decode("utf-8") for v in values]
            except UnicodeDecodeError as exc:
                raise InvalidInputError(f"input {tensor.name!r} is not UTF-8 text: {exc}") from None
        return values  # encoded image files
    if schema.modality == "text":
        raise InvalidInputError(f"a text model takes a BYTES tensor; got {tensor.datatype}")
    if tensor.values.ndim not in (3, 4):
        raise InvalidInputError(
            f"image pixels must be [n, h, w] or [n, h, w, c]; got shape {tensor.shape}"
        )
    return list(tensor.values)


def _table(schema: InputSchema, tensors: list[Tensor]) -> np.ndarray:
    """Column tensors (or the one ``[n, n_columns]`` tensor) -> ``(n, n_columns)`` rows."""
    columns = list(schema.columns)
    given = {t.name: t for t in tensors}
    if len(tensors) == 1 and tensors[0].name not in schema.columns:
        return _matrix(schema, tensors[0])
    missing = [c for c in columns if c not in given]
    if missing:
        raise InvalidInputError(
            f"table inputs are one tensor per column; missing {missing}. Expected columns: "
            f"{columns}{_matrix_hint(schema)}"
        )
    extra = sorted(set(given) - set(columns))
    if extra:
        raise InvalidInputError(f"unknown input tensors {extra}; expected columns {columns}")
    flat = [given[c].values.reshape(-1) for c in columns]
    sizes = {c: len(v) for c, v in zip(columns, flat, strict=True)}
    if len(set(sizes.values())) != 1:
        raise InvalidInputError(
            f"every column tensor must hold the same number of rows; got {sizes}"
        )
    n = len(flat[0])
    if n == 0:
        raise InvalidInputError("the column tensors hold no rows; send at least one")
    if schema.all_numeric and all(given[c].datatype != "BYTES" for c in columns):
        rows = np.empty((n, len(columns)), dtype=np.float64)  # (n, columns)
        for j, values in enumerate(flat):
            rows[:, j] = values
        return rows
    # strings somewhere: Python values (str, int, float, bool), as the preprocessor reads
    # them from JSON rows, so "1" and 1 name the same category
    rows = np.empty((n, len(columns)), dtype=object)  # (n, columns)
    for j, (c, values) in enumerate(zip(columns, flat, strict=True)):
        if given[c].datatype == "BYTES":
            rows[:, j] = [v.decode("utf-8", "replace") for v in values]
        else:
            rows[:, j] = values.tolist()
    return rows


def _matrix_hint(schema: InputSchema) -> str:
    if not schema.all_numeric:
        return ""
    return (
        f". Or, as every column is a number, send one {' or '.join(MATRIX_DATATYPES)} tensor "
        f"of shape [n, {len(schema.columns)}] with the columns in that order"
    )


def _matrix(schema: InputSchema, tensor: Tensor) -> np.ndarray:
    """The one-tensor form of an all-number table: ``[n, n_columns]``, FP32 or FP64."""
    name, shape, width = tensor.name, tensor.shape, len(schema.columns)
    if len(shape) != 2:
        raise InvalidInputError(
            f"table inputs are one tensor per column; missing {list(schema.columns)}"
            f"{_matrix_hint(schema)}; got one tensor {name!r} of shape {shape}"
        )
    if not schema.all_numeric:
        raise InvalidInputError(
            f"input {name!r} (shape {shape}) is not a column of this model, and one tensor "
            f"for the whole table is only for tables whose columns are all numbers: "
            f"{schema.string_columns} hold strings. Send one tensor per column: "
            f"{list(schema.columns)}"
        )
    if shape[1] != width:
        shown = list(schema.columns[:5]) + (["..."] if width > 5 else [])
        raise InvalidInputError(
            f"input {name!r} has shape {shape}: {shape[1]} features per row, but this model "
            f"takes {width} ({shown}). Hint: send shape [n, {width}] with the columns in the "
            "order of the model metadata's inputs"
        )
    if tensor.datatype not in MATRIX_DATATYPES:
        raise InvalidInputError(
            f"input {name!r} is {tensor.datatype}; a table sent as one [n, {width}] tensor "
            f"must be {' or '.join(MATRIX_DATATYPES)}. Hint: cast it to floats, or send one "
            "tensor per column"
        )
    if shape[0] == 0:
        raise InvalidInputError(f"input {name!r} has shape {shape}: no rows; send at least one")
    return tensor.values.astype(np.float64, copy=False)  # (n, columns)


# ---- metadata -----------------------------------------------------------------------


def metadata_inputs(schema: InputSchema) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The OIP model metadata's ``inputs``, and the ``parameters`` that say how to send
    them: ``inputs_doc`` (every accepted form, in words) and, for an all-number table,
    ``matrix_input`` (the one-tensor form as a tensor description)."""
    if schema.modality == "text":
        inputs = [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
        return inputs, {"inputs_doc": "one BYTES tensor [n] of UTF-8 texts"}
    if schema.modality == "image":
        inputs = [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
        doc = (
            "one tensor: BYTES [n] of encoded image files (PNG, JPEG, ...), or UINT8 or FP32 "
            "pixels [n, h, w] or [n, h, w, c] (0-255 or 0-1)"
        )
        return inputs, {"inputs_doc": doc}
    inputs = [
        {"name": c, "datatype": "FP64" if number else "BYTES", "shape": [-1]}
        for c, number in zip(schema.columns, schema.numeric, strict=True)
    ]
    doc = (
        "one tensor per column, named as the column, shape [n]: numbers for number columns "
        "(any numeric datatype), BYTES for string columns"
    )
    if not schema.all_numeric:
        return inputs, {"inputs_doc": doc}
    width = len(schema.columns)
    doc += (
        f"; or, as every column is a number, one FP32 or FP64 tensor [n, {width}] with the "
        "columns in the order of these inputs, under any name that is not a column's (as "
        "KServe's scikit-learn server and MLServer's scikit-learn runtime take)"
    )
    name = MATRIX_INPUT if MATRIX_INPUT not in schema.columns else "input-0"
    matrix = {"name": name, "datatype": "FP64", "shape": [-1, width]}
    return inputs, {"inputs_doc": doc, "matrix_input": matrix}
