"""``tuneserve compress`` as a user runs it: a separate process, the chosen package written,
registered, and bad input as one clear line."""

from __future__ import annotations

import json

import pytest
from test_cli import assert_one_line_error, tuneserve


@pytest.fixture(scope="module")
def wine_mlp(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compress-cli")
    tuneserve("train", "wine", "--backbone", "mlp", "--epochs", "20", "--out", str(folder / "mlp"))
    return folder


def test_compress_writes_the_chosen_package_and_registers_it(wine_mlp) -> None:
    out = wine_mlp / "search"
    proc = tuneserve(
        "compress",
        str(wine_mlp / "mlp"),
        "--data",
        "wine",
        "--out",
        str(out),
        "--methods",
        "int8-dynamic,fp16",
        "--max-accuracy-drop",
        "0.02",
        "--register",
        "wine-small",
        "--track",
    )
    assert "chosen" in proc.stdout and f"report: {out / 'report.html'}" in proc.stdout
    assert (out / "chosen" / "manifest.json").is_file()
    shown = json.loads(tuneserve("registry", "show", "wine-small/1", "--json").stdout)
    chosen = json.loads((out / "compression.json").read_text())["chosen"]
    manifest = json.loads((out / "chosen" / "manifest.json").read_text())
    assert shown[0]["package_id"] == manifest["package_id"]
    assert manifest["lineage"]["compression"]["method"] == chosen
    from tuneserve.data import load
    from tuneserve.runtime import Predictor

    wine = load("wine")
    labels = [p.label for p in Predictor(out / "chosen").predict(wine.X.iloc[:20])]
    assert labels == [wine.label_names[c] for c in wine.y[:20]]


def test_json_output_lists_every_variant(wine_mlp) -> None:
    proc = tuneserve(
        "compress",
        str(wine_mlp / "mlp"),
        "--data",
        "wine",
        "--out",
        str(wine_mlp / "j"),
        "--methods",
        "int8-static",
        "--json",
        "--no-track",
    )
    result = json.loads(proc.stdout)
    assert {v["name"] for v in result["variants"]} == {
        "int8-static-minmax",
        "int8-static-entropy",
        "int8-static-percentile",
    }
    assert result["original"]["metric"] == "accuracy"


def test_no_variant_within_the_budget_exits_2_with_the_closest(wine_mlp) -> None:
    proc = tuneserve(
        "compress",
        str(wine_mlp / "mlp"),
        "--data",
        "wine",
        "--out",
        str(wine_mlp / "b"),
        "--methods",
        "fp16",
        "--size-mb",
        "0.000001",
        "--no-track",
        check=False,
    )
    assert proc.returncode == 2
    assert "error: no variant of 1 meets the rules. Closest: fp16: size" in proc.stderr
    assert "fp16" in proc.stdout  # the table of what was measured comes first
    assert "Traceback" not in proc.stderr


@pytest.mark.slow  # the default run's 15-minute budget; make test-slow runs it
def test_bad_input_is_one_clear_line(wine_mlp, tmp_path) -> None:
    from tuneserve.data import load

    wine = load("wine")
    frame = wine.X.rename(columns={"alcohol": "alc"})
    frame.assign(label=[wine.label_names[c] for c in wine.y]).to_csv(
        tmp_path / "w.csv", index=False
    )
    mlp = str(wine_mlp / "mlp")
    assert_one_line_error(
        tuneserve(
            "compress",
            mlp,
            "--data",
            str(tmp_path / "w.csv"),
            "--out",
            str(tmp_path / "a"),
            "--methods",
            "int8-static",
            check=False,
        ),
        "does not match the input schema",
        "missing column(s) ['alcohol']",
    )
    assert_one_line_error(
        tuneserve(
            "compress",
            mlp,
            "--data",
            "wine",
            "--out",
            str(tmp_path / "b"),
            "--methods",
            "shorten",
            check=False,
        ),
        "shorten: it shortens token sequences",
        "Methods that apply:",
    )
    assert_one_line_error(
        tuneserve(
            "compress",
            mlp,
            "--data",
            "wine",
            "--out",
            str(tmp_path / "c"),
            "--set",
            "distill",
            check=False,
        ),
        "--set takes METHOD.KEY=VALUE",
    )
    assert not (tmp_path / "a").exists()  # refused before anything was written
