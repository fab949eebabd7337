"""``select``: filter by rules, ensembles written as packages that run like any other."""

from __future__ import annotations

import numpy as np
import pytest

from tuneserve.data import load, split
from tuneserve.exceptions import InvalidInputError
from tuneserve.package import Package
from tuneserve.runtime import Predictor
from tuneserve.selection import Combiner, export_ensemble, member_probabilities, select


@pytest.fixture(scope="module")
def candidates(tmp_path_factory):
    from tuneserve import train

    folder = tmp_path_factory.mktemp("select")
    for backbone in ("logreg", "random-forest", "mlp"):
        train("wine", out=folder / f"wine-{backbone}", backbone=backbone)
    train("breast_cancer", out=folder / "breast_cancer-logreg", backbone="logreg")
    return folder


def _wine(folder):
    return [folder / f"wine-{b}" for b in ("logreg", "random-forest", "mlp")]


def test_filter_keeps_the_best_candidate_that_meets_every_rule(candidates, tmp_path):
    result = select(
        _wine(candidates), "wine", tmp_path / "best", method="filter",
        rules=["accuracy>=0.5", "size_mb<=100"],
    )  # fmt: skip
    ranked = sorted(result.measured, key=lambda n: -result.measured[n]["accuracy"])
    assert result.members == [ranked[0]]
    assert result.package.id == Package.load(candidates / ranked[0]).id  # the same package
    assert {"latency_ms", "size_mb", "f1_macro"} <= set(result.measured[ranked[0]])
    with pytest.raises(InvalidInputError, match=r"size_mb<=1e-06 removed wine-logreg \("):
        select(_wine(candidates), "wine", tmp_path / "none", method="filter",
               rules=["size_mb<=0.000001"])  # fmt: skip
    with pytest.raises(InvalidInputError, match="unknown metric 'auc'"):
        select(_wine(candidates), "wine", tmp_path / "x", method="filter", rules=["auc>=0.9"])


@pytest.mark.parametrize("method", ["soft-vote", "hard-vote", "weighted", "greedy", "stacking"])
def test_every_ensemble_is_a_package_with_parity(candidates, tmp_path, method):
    result = select(_wine(candidates), "wine", tmp_path / method, method=method, rounds=10)
    package = Predictor(result.package.path)
    assert package.manifest.preprocessing["kind"] == "ensemble-members"
    files = list(package.manifest.files)
    assert not [f for f in files if "/extras/" in f]  # members' extras (mlp weights) stay out
    if method == "soft-vote":
        assert (candidates / "wine-mlp" / "extras").is_dir() and "wine-mlp" in result.members
        assert "assets/members/2/manifest.json" in files
    if method == "hard-vote":  # members load unchecked: the ensemble's own check covers them
        import shutil

        from tuneserve.exceptions import ChecksumError

        tampered = shutil.copytree(result.package.path, tmp_path / "tampered")
        graph = tampered / "assets" / "members" / "0" / "model.onnx"
        graph.write_bytes(graph.read_bytes() + b"\0")
        with pytest.raises(ChecksumError, match=r"members/0/model\.onnx"):
            Predictor(tampered)
    assert package.manifest.graph.parity_max_abs_diff <= 1e-5
    test = split(load("wine"), seed=0).test
    members = [Predictor(candidates / name) for name in result.members]
    P = member_probabilities(members, package.labels, test.X)
    ensemble = package.manifest.lineage.ensemble
    assert ensemble is not None and [m.name for m in ensemble.members] == result.members
    config = ensemble.combiner
    combiner = Combiner(
        config["kind"],
        np.array(config["weights"]),
        np.array(config["coef"]) if "coef" in config else None,
        np.array(config["intercept"]) if "intercept" in config else None,
    )
    np.testing.assert_allclose(package.predict_proba(test.X), combiner.combine(P), atol=1e-5)
    assert result.scores["result"] > 0.8 and result.rows["fit"] + result.rows["report"] == 36
    if result.weights is not None:
        assert sum(result.weights) == pytest.approx(1.0)
    if method in ("greedy", "weighted"):
        assert len(result.members) == len(result.weights or [])
        assert all(w > 0 for w in result.weights or [])  # unused members are dropped


def test_hybrid_filters_then_combines_the_survivors(candidates, tmp_path):
    first = select(_wine(candidates), "wine", tmp_path / "all", method="hybrid",
                   rules=["accuracy>=0"], combine="soft-vote")  # fmt: skip
    sizes = {name: m["size_mb"] for name, m in first.measured.items()}
    largest = max(sizes, key=sizes.__getitem__)
    result = select(
        _wine(candidates), "wine", tmp_path / "hybrid", method="hybrid",
        rules=[f"size_mb<{sizes[largest]}"], combine="soft-vote",
    )  # fmt: skip
    assert largest not in result.survivors and len(result.survivors) == 2
    assert result.members == result.survivors and result.weights == [0.5, 0.5]
    assert any(item.startswith(largest) for items in result.removed.values() for item in items)


def test_members_must_share_their_input_and_classes(candidates, tmp_path):
    wine = Predictor(candidates / "wine-logreg")
    cancer = Predictor(candidates / "breast_cancer-logreg")
    test = split(load("wine"), seed=0).test
    with pytest.raises(InvalidInputError, match="members must take the same input"):
        export_ensemble([wine, cancer], Combiner("mean", [0.5, 0.5]), tmp_path / "e",
                        sample_inputs=test.X)  # fmt: skip
    with pytest.raises(InvalidInputError, match="different label sets"):
        select([candidates / "wine-logreg", candidates / "breast_cancer-logreg"], "wine",
               tmp_path / "s")  # fmt: skip
    with pytest.raises(InvalidInputError, match="method must be one of"):
        select(_wine(candidates), "wine", tmp_path / "m", method="bagging")


def test_stacking_on_out_of_fold_predictions(candidates, tmp_path):
    from tuneserve.evaluation import cross_validate

    folders = []
    two = _wine(candidates)[:2]  # logreg and random-forest
    for backbone in ("logreg", "random-forest"):
        cross_validate("wine", backbone=backbone, folds=3, out=tmp_path / backbone, bootstrap=0)
        folders.append(tmp_path / backbone)
    result = select(two, "wine", tmp_path / "stack", method="stacking", oof=folders)
    test_rows = 36
    assert result.rows == {"fit": 178 - test_rows, "report": test_rows}  # all unscored rows
    assert Predictor(result.package.path).predict_proba(load("wine").X.head(3)).shape == (3, 3)
    with pytest.raises(InvalidInputError, match="1 --oof folders for 2 candidates"):
        select(two, "wine", tmp_path / "x", method="greedy", oof=folders[:1])
    with pytest.raises(InvalidInputError, match="other data than iris"):
        select(two, "iris", tmp_path / "y", method="greedy", oof=folders)


def test_evaluate_scores_an_ensemble_on_the_rows_it_was_not_fitted_on(candidates, tmp_path):
    from tuneserve.evaluation import evaluate

    result = select(_wine(candidates), "wine", tmp_path / "ens", method="weighted")
    scored = evaluate(result.package.path, "wine", bootstrap=0)
    assert "the selection held out" in scored.rows
    assert len(scored.y) == result.rows["report"]
    assert scored.metrics["accuracy"].value == pytest.approx(result.scores["result"])


def test_a_member_that_adds_nothing_is_left_out_of_the_package(candidates, tmp_path):
    from tuneserve import train

    wine = load("wine")
    shuffled = np.random.default_rng(0).permutation(wine.y)  # labels that mean nothing
    noise = wine.X.assign(label=[wine.label_names[code] for code in shuffled])
    train(noise, out=tmp_path / "wine-noise", backbone="logreg")
    packages = [candidates / "wine-logreg", tmp_path / "wine-noise"]
    result = select(packages, "wine", tmp_path / "w", method="weighted", rows="all")
    assert result.survivors == ["wine-logreg", "wine-noise"]
    assert result.members == ["wine-logreg"] and result.weights == [1.0]
    members = Package.load(result.package.path).manifest.preprocessing["members"]
    assert len(members) == 1


def test_member_file_names_are_checked_even_when_loaded_unverified(candidates, tmp_path):
    import json
    import shutil

    forged = shutil.copytree(candidates / "wine-logreg", tmp_path / "forged")
    manifest = json.loads((forged / "manifest.json").read_text())
    manifest["files"]["/etc/hostname"] = "sha256:" + "0" * 64
    (forged / "manifest.json").write_text(json.dumps(manifest))
    member = Predictor(Package.load(forged, verify=False))  # a caller's choice
    test = split(load("wine"), seed=0).test
    with pytest.raises(InvalidInputError, match="'/etc/hostname' is not allowed"):
        export_ensemble([member, candidates / "wine-mlp"], Combiner("mean", [0.5, 0.5]),
                        tmp_path / "e", sample_inputs=test.X)  # fmt: skip
    assert not (tmp_path / "e").exists()
