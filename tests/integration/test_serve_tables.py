"""Tables over the Open Inference Protocol, on a real server (uvicorn) with real clients:
one tensor per column, or for an all-number table one ``[n, n_columns]`` FP32/FP64 tensor
(what KServe's scikit-learn server and MLServer take), JSON and binary; bad tensors get a
400 that names the rule and the fix; requests in different forms share batches."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
from _live_server import LiveServer

from tuneserve.runtime import Predictor
from tuneserve.serving import BatchSettings, ModelSpec, Repository, create_app


@pytest.fixture(scope="module")
def mixed_package(tmp_path_factory):
    """A table with a number and a string column (no one-tensor form for it)."""
    from tuneserve.data import load, split
    from tuneserve.training import train_logistic_regression

    rng = np.random.default_rng(0)
    size = rng.uniform(0, 10, 120)
    color = rng.choice(["red", "green", "blue"], 120)
    label = np.where((size > 5) ^ (color == "red"), "big", "small")
    data = load(pd.DataFrame({"size": size, "color": color, "label": label}), label_column="label")
    parts = split(data, seed=0)
    out = tmp_path_factory.mktemp("packages") / "mixed"
    train_logistic_regression(parts.train, parts.validation).export(out, parts.test.X)
    return out


@pytest.fixture(scope="module")
def server(cancer_package, mixed_package):
    repository = Repository(
        [ModelSpec.parse(f"cancer={cancer_package}"), ModelSpec.parse(f"mixed={mixed_package}")],
        BatchSettings(max_batch_size=64, max_queue_delay_ms=50),
    )
    repository.load_all()
    live = LiveServer(create_app(repository))
    yield live.url, repository
    live.stop()


def _post(url: str, path: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://{url}{path}", data=json.dumps(body).encode(), method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        payload = exc.read()
        exc.close()
        return exc.code, json.loads(payload)


def _matrix(frame: pd.DataFrame, datatype: str = "FP64", name: str = "input-0") -> dict:
    values = frame.to_numpy(np.float64)
    return {
        "inputs": [
            {
                "name": name,
                "shape": list(values.shape),
                "datatype": datatype,
                "data": values.ravel().tolist(),
            }
        ]
    }


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
def test_an_all_number_table_as_one_tensor_answers_like_one_tensor_per_column(
    server, cancer_splits, datatype, binary
):
    import tritonclient.http as triton

    url, repository = server
    dtype = np.float32 if datatype == "FP32" else np.float64
    client = triton.InferenceServerClient(url)
    try:
        meta = client.get_model_metadata("cancer")
        order = [i["name"] for i in meta["inputs"]]
        assert meta["parameters"]["matrix_input"]["shape"] == [-1, len(order)]
        doc = meta["parameters"]["inputs_doc"]
        assert "one tensor per column" in doc and f"[n, {len(order)}]" in doc
        frame = cancer_splits.test.X.iloc[:7][order]

        columns = []
        for column in order:
            tensor = triton.InferInput(column, [len(frame)], datatype)
            tensor.set_data_from_numpy(frame[column].to_numpy(dtype), binary_data=binary)
            columns.append(tensor)
        outputs = [
            triton.InferRequestedOutput("probabilities", binary_data=binary),
            triton.InferRequestedOutput("label", binary_data=binary),
        ]
        per_column = client.infer("cancer", columns, outputs=outputs)
        one = triton.InferInput("input-0", list(frame.shape), datatype)
        one.set_data_from_numpy(frame.to_numpy(dtype), binary_data=binary)
        result = client.infer("cancer", [one], outputs=outputs)

        probabilities = result.as_numpy("probabilities")
        np.testing.assert_array_equal(probabilities, per_column.as_numpy("probabilities"))
        assert list(result.as_numpy("label")) == list(per_column.as_numpy("label"))
        rows = frame.astype(dtype).astype(np.float64).to_dict("records")
        want = Predictor(repository.get("cancer").predictor.package).predict_proba(rows)
        np.testing.assert_allclose(probabilities, want, atol=1e-6)
    finally:
        client.close()


@pytest.mark.parametrize(
    ("model", "body", "message"),
    [
        (
            "cancer",
            lambda frame: _matrix(frame.iloc[:, :29]),
            "[2, 29]: 29 features per row, but this model takes 30",
        ),
        ("cancer", lambda frame: _matrix(frame, "INT64"), "must be FP32 or FP64"),
        (
            "cancer",
            lambda frame: {
                "inputs": [{"name": "x", "shape": [1, 2, 30], "datatype": "FP64", "data": [0] * 60}]
            },
            "one tensor per column; missing",
        ),
        (
            "mixed",
            lambda frame: _matrix(pd.DataFrame({"size": [1.0, 2.0], "color": [0.0, 1.0]})),
            "only for tables whose columns are all numbers: ['color'] hold strings",
        ),
    ],
    ids=["wrong-n-features", "wrong-datatype", "wrong-rank", "not-all-numbers"],
)
def test_a_bad_table_tensor_gets_a_400_naming_the_rule(server, cancer_splits, model, body, message):
    url, _ = server
    code, payload = _post(url, f"/v2/models/{model}/infer", body(cancer_splits.test.X.iloc[:2]))
    assert code == 400, payload
    assert set(payload) == {"error"} and message in payload["error"]


def test_a_mixed_table_by_column_tensors_answers_like_json_rows(server):
    url, repository = server
    rows = [{"size": 2.5, "color": "red"}, {"size": 7.0, "color": "blue"}]
    code, simple = _post(url, "/v1/models/mixed/predict", {"inputs": rows})
    assert code == 200, simple
    body = {
        "inputs": [
            {"name": "color", "shape": [2], "datatype": "BYTES", "data": ["red", "blue"]},
            {"name": "size", "shape": [2], "datatype": "FP32", "data": [2.5, 7.0]},
        ]
    }
    code, oip = _post(url, "/v2/models/mixed/infer", body)
    assert code == 200, oip
    probabilities = next(o for o in oip["outputs"] if o["name"] == "probabilities")["data"]
    labels = repository.get("mixed").predictor.labels
    want = [[p["probabilities"][k] for k in labels] for p in simple["predictions"]]
    np.testing.assert_allclose(np.reshape(probabilities, (2, -1)), want, atol=1e-6)


def test_requests_in_different_forms_share_batches(server, cancer_splits):
    """Row dicts (simple JSON), column tensors and one-tensor requests for the same model,
    concurrent: each gets its own answer, and batches form across them."""
    url, repository = server
    frame = cancer_splits.test.X.iloc[:16]
    want = Predictor(repository.get("cancer").predictor.package).predict_proba(frame)
    batcher = repository.get("cancer").batcher
    before = batcher.stats.batches, batcher.stats.items

    def one(i: int) -> np.ndarray:
        row = frame.iloc[[i % len(frame)]]
        form = i % 3
        if form == 0:
            code, body = _post(url, "/v1/models/cancer/predict", {"inputs": row.to_dict("records")})
            assert code == 200, body
            return np.array([list(body["predictions"][0]["probabilities"].values())])
        if form == 1:
            tensors = [
                {"name": c, "shape": [1], "datatype": "FP64", "data": [float(row[c].iloc[0])]}
                for c in frame.columns
            ]
            code, body = _post(url, "/v2/models/cancer/infer", {"inputs": tensors})
        else:
            code, body = _post(url, "/v2/models/cancer/infer", _matrix(row))
        assert code == 200, body
        return np.array([next(o for o in body["outputs"] if o["name"] == "probabilities")["data"]])

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(one, range(48)))
    for i, answer in enumerate(answers):
        np.testing.assert_allclose(answer, want[[i % len(frame)]], atol=1e-6)
    batches = batcher.stats.batches - before[0]
    assert batcher.stats.items - before[1] == 48 and batches < 48, batcher.stats.sizes
