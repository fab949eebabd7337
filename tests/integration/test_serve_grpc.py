"""The Open Inference Protocol over gRPC, served beside REST from one process, called with
real clients: ``tritonclient.grpc`` (raw contents, and typed contents through its own
generated stub) and the ``kserve`` package's ``InferenceGRPCClient``."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from _live_server import LiveServer

from tuneserve.runtime import Predictor
from tuneserve.serving import BatchSettings, Limits, ModelSpec, Repository, create_app

_KSERVE_PYTHON = Path(__file__).parents[2] / ".venv-kserve" / "bin" / "python"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Served:
    """A live server with gRPC on its own port; ``grpc`` is ``host:port``."""

    def __init__(self, specs: list[str], limits: Limits | None = None, **kwargs: Any) -> None:
        self.repository = Repository(
            [ModelSpec.parse(s) for s in specs],
            kwargs.pop("settings", BatchSettings(max_batch_size=64, max_queue_delay_ms=5)),
        )
        self.repository.load_all()
        port = _free_port()
        self.grpc = f"127.0.0.1:{port}"
        app = create_app(self.repository, limits, grpc_address=("127.0.0.1", port), **kwargs)
        self.http = LiveServer(app)

    def client(self) -> Any:
        import tritonclient.grpc as triton

        return triton.InferenceServerClient(self.grpc)

    def predictor(self, name: str) -> Predictor:
        return Predictor(self.repository.get(name).predictor.package)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://{self.http.url}/metrics") as reply:
            return str(reply.read().decode())

    def stop(self) -> None:
        self.http.stop()


@pytest.fixture(scope="module")
def served(digits_package, cancer_package, text_package):
    server = Served(
        [f"digits={digits_package}", f"cancer={cancer_package}", f"reviews={text_package}"],
        Limits(max_body_bytes=200_000, max_items=300, timeout_s=30),
    )
    yield server
    server.stop()


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray((image[:, :, 0] * 255).round().astype(np.uint8), mode="L").save(buffer, "PNG")
    return buffer.getvalue()


def _input(name: str, array: np.ndarray, datatype: str) -> Any:
    import tritonclient.grpc as triton

    tensor = triton.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def _labels(result: Any) -> list[str]:
    return [v.decode() for v in result.as_numpy("label")]


def test_tritonclient_raw_contents_text_image_and_table(
    served, digits_splits, cancer_splits, text_model
):
    client = served.client()
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("digits") and client.is_model_ready("digits", "1")
        meta = client.get_server_metadata(as_json=True)
        assert meta["name"] == "tuneserve" and "model_repository" in meta["extensions"]
        meta = client.get_model_metadata("cancer", as_json=True)
        assert meta["platform"] == "onnxruntime_onnx" and len(meta["inputs"]) == 30
        assert meta["outputs"][1] == {"name": "label", "datatype": "BYTES", "shape": ["-1"]}

        # text: one BYTES tensor of UTF-8 strings
        texts = text_model[2][:4]
        result = client.infer(
            "reviews", [_input("text", np.array([t.encode() for t in texts], object), "BYTES")]
        )
        want = served.predictor("reviews").predict_proba(texts)
        np.testing.assert_allclose(result.as_numpy("probabilities"), want, atol=1e-6)
        labels = served.predictor("reviews").labels
        assert _labels(result) == [labels[i] for i in want.argmax(1)]

        # images: encoded PNG files, then UINT8 pixels; one output asked for; a request id
        images = digits_splits.test.X[:6]
        files = [_png(x) for x in images]
        result = client.infer(
            "digits",
            [_input("image", np.array(files, dtype=object), "BYTES")],
            request_id="r1",
        )
        want = served.predictor("digits").predict_proba(files)
        np.testing.assert_allclose(result.as_numpy("probabilities"), want, atol=1e-6)
        assert result.get_response().id == "r1"
        assert result.get_response().model_version == "1"
        pixels = (np.stack([x[:, :, 0] for x in images]) * 255).round().astype(np.uint8)
        import tritonclient.grpc as triton

        result = client.infer(
            "digits",
            [_input("image", pixels, "UINT8")],
            outputs=[triton.InferRequestedOutput("label")],
        )
        assert [o.name for o in result.get_response().outputs] == ["label"]
        assert _labels(result) == [
            served.predictor("digits").labels[i]
            for i in served.predictor("digits").predict_proba(list(pixels)).argmax(1)
        ]

        # a table: one FP64 tensor per column, then the one [n, 30] tensor form
        frame = cancer_splits.test.X.iloc[:7]
        want = served.predictor("cancer").predict_proba(frame)
        columns = [_input(c, frame[c].to_numpy(np.float64), "FP64") for c in frame.columns]
        result = client.infer("cancer", columns, model_version="1")
        np.testing.assert_allclose(result.as_numpy("probabilities"), want, atol=1e-6)
        matrix = _input("input", frame.to_numpy(np.float32), "FP32")
        result = client.infer("cancer", [matrix])
        np.testing.assert_allclose(result.as_numpy("probabilities"), want, atol=1e-5)
    finally:
        client.close()
    metrics = served.metrics()
    assert 'tuneserve_requests_total{api="grpc",code="200",model="digits"} 2.0' in metrics


def test_typed_contents_through_tritonclients_own_stub(served, cancer_splits, text_model):
    """Typed ``contents`` (no raw bytes), sent with tritonclient's generated messages and
    stub as they ship."""
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    frame = cancer_splits.test.X.iloc[:3]
    request = service_pb2.ModelInferRequest(model_name="cancer", id="typed")
    for column in frame.columns:
        tensor = request.inputs.add(name=column, datatype="FP64", shape=[len(frame)])
        tensor.contents.fp64_contents.extend(frame[column].tolist())
    texts = text_model[2][:2]
    text_request = service_pb2.ModelInferRequest(model_name="reviews")
    tensor = text_request.inputs.add(name="text", datatype="BYTES", shape=[len(texts)])
    tensor.contents.bytes_contents.extend(t.encode() for t in texts)
    with grpc.insecure_channel(served.grpc) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        response = stub.ModelInfer(request, timeout=30)
        text_response = stub.ModelInfer(text_request, timeout=30)
    assert response.id == "typed" and [o.name for o in response.outputs] == [
        "probabilities",
        "label",
    ]
    assert list(response.outputs[0].shape) == [3, 2]
    probs = np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(3, 2)
    np.testing.assert_allclose(probs, served.predictor("cancer").predict_proba(frame), atol=1e-6)
    probs = np.frombuffer(text_response.raw_output_contents[0], dtype="<f4").reshape(2, -1)
    np.testing.assert_allclose(probs, served.predictor("reviews").predict_proba(texts), atol=1e-6)


@pytest.mark.parametrize("model", ["cancer", "reviews", "digits"])
def test_the_kserve_grpc_client(served, cancer_splits, digits_splits, text_model, tmp_path, model):
    """kserve's ``InferenceGRPCClient``: typed contents and raw, in its own environment."""
    python = os.environ.get("TUNESERVE_KSERVE_PYTHON", str(_KSERVE_PYTHON))
    assert Path(python).exists(), (
        f"the kserve client environment is missing ({python}): run `make kserve-client` "
        "(make test builds it), or set TUNESERVE_KSERVE_PYTHON to a Python with kserve"
    )
    inputs: Any
    if model == "cancer":
        inputs = cancer_splits.test.X.iloc[:5]
        arrays = {c: inputs[c].to_numpy(np.float64) for c in inputs.columns}
    elif model == "reviews":
        inputs = text_model[2][:4]
        arrays = {"text": np.array(inputs, dtype=object)}
    else:  # FP32 pixels [n, h, w]
        inputs = list(np.stack(digits_splits.test.X[:3])[:, :, :, 0].astype(np.float32))
        arrays = {"image": np.stack(inputs)}
    np.savez(tmp_path / "inputs.npz", **arrays)
    script = Path(__file__).parents[1] / "clients" / "kserve_grpc.py"
    proc = subprocess.run(
        [python, str(script), served.grpc, model, str(tmp_path / "inputs.npz")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["live"] and report["ready"] and report["model_ready"]
    predictor = served.predictor(model)
    want = predictor.predict_proba(inputs)
    for mode in ("typed", "raw"):
        result = report[mode]
        assert result["id"] == f"kserve-{mode}" and result["model_name"] == model
        np.testing.assert_allclose(result["probabilities"], want, atol=1e-5)
        assert result["label"] == [predictor.labels[i] for i in want.argmax(1)]


def _code(call: Any) -> tuple[grpc.StatusCode, str]:
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException) as caught:
        call()
    status = str(caught.value.status())
    return getattr(grpc.StatusCode, status.removeprefix("StatusCode.")), caught.value.message()


def test_bad_requests_get_the_right_status_with_a_message(served, cancer_splits):
    client = served.client()
    frame = cancer_splits.test.X.iloc[:2]
    columns = [_input(c, frame[c].to_numpy(np.float64), "FP64") for c in frame.columns]
    cases: list[tuple[Any, grpc.StatusCode, str]] = [
        (lambda: client.infer("nope", columns), grpc.StatusCode.NOT_FOUND, "no model named"),
        (
            lambda: client.infer("cancer", columns, model_version="7"),
            grpc.StatusCode.NOT_FOUND,
            "no loaded version '7'",
        ),
        (
            lambda: client.infer("cancer", columns[:-1]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "missing",
        ),
        (
            lambda: client.infer("reviews", [_input("text", np.zeros(3, np.float32), "FP32")]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "takes a BYTES tensor",
        ),
        (
            lambda: client.infer(
                "reviews", [_input("text", np.array([b"\xff\xfe"], object), "BYTES")]
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "not UTF-8",
        ),
        (  # more inputs than --max-items
            lambda: client.infer("reviews", [_input("text", np.array([b"a"] * 301), "BYTES")]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "the limit is 300",
        ),
        (  # a message over --max-body-mb (200 kB here): refused by gRPC itself
            lambda: client.infer(
                "digits", [_input("image", np.zeros((60, 40, 40), np.float32), "FP32")]
            ),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "larger than max",
        ),
        (
            lambda: client.infer(
                "cancer", columns, outputs=[_requested("probabilities"), _requested("nope")]
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "unknown outputs ['nope']",
        ),
        (
            lambda: client.get_model_metadata("nope"),
            grpc.StatusCode.NOT_FOUND,
            "no model named",
        ),
        (lambda: client.is_model_ready("nope"), grpc.StatusCode.NOT_FOUND, "no model named"),
    ]
    try:
        for call, code, message in cases:
            got, text = _code(call)
            assert (got, message in text) == (code, True), (code, message, got, text)
    finally:
        client.close()


def _requested(name: str) -> Any:
    import tritonclient.grpc as triton

    return triton.InferRequestedOutput(name)


def test_malformed_messages_never_get_unknown_or_internal(served):
    """Raw protobuf requests a client library would never send: every one is refused with
    INVALID_ARGUMENT and a message, never UNKNOWN or INTERNAL."""
    from tuneserve.serving.proto import grpc_predict_v2_pb2 as pb
    from tuneserve.serving.proto import grpc_predict_v2_pb2_grpc as pb_grpc

    def request(**kwargs: Any) -> Any:
        r = pb.ModelInferRequest(model_name="digits")
        r.inputs.add(**kwargs)
        return r

    bad = [
        (pb.ModelInferRequest(model_name="digits"), "at least one input"),
        (request(name="image", datatype="FP32", shape=[-1, 8, 8]), "sizes >= 0"),
        (request(name="image", datatype="FLOAT", shape=[1]), "not an OIP type"),
        (request(name="", datatype="FP32", shape=[1]), "has no name"),
        (request(name="image", datatype="FP16", shape=[1, 8, 8]), "raw_input_contents"),
        (request(name="image", datatype="FP32", shape=[1, 8, 8]), "holds 64 elements but 0"),
        (request(name="image", datatype="FP32", shape=[1] * 40), "beyond what any request"),
        (request(name="image", datatype="FP32", shape=[2**40, 2**40, 0]), "beyond what"),
    ]
    raw = request(name="image", datatype="FP32", shape=[1, 8, 8])
    raw.raw_input_contents.append(b"\x00" * 7)
    bad.append((raw, "7 raw bytes"))
    both = request(name="image", datatype="FP32", shape=[1, 1, 1])
    both.inputs[0].contents.fp32_contents.append(1.0)
    both.raw_input_contents.append(b"\x00" * 4)
    bad.append((both, "one or the other"))
    wrong_field = request(name="image", datatype="FP32", shape=[1, 1, 1])
    wrong_field.inputs[0].contents.fp64_contents.append(1.0)
    bad.append((wrong_field, "contents.fp32_contents"))
    overflow = request(name="image", datatype="UINT8", shape=[1, 1, 1])
    overflow.inputs[0].contents.uint_contents.append(300)
    bad.append((overflow, "fit UINT8"))
    extra = request(name="image", datatype="BYTES", shape=[1])
    extra.raw_input_contents.extend([b"\x01\x00\x00\x00a", b""])
    bad.append((extra, "2 entries for 1 inputs"))
    with grpc.insecure_channel(served.grpc) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for message, text in bad:
            with pytest.raises(grpc.RpcError) as caught:
                stub.ModelInfer(message, timeout=30)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (
                text,
                caught.value.details(),
            )
            assert text in caught.value.details(), (text, caught.value.details())


def test_rest_and_grpc_share_one_decoding(served):
    """The same bad input gets the same message over REST and gRPC: one decoder."""
    body = {"inputs": [{"name": "text", "datatype": "FP32", "shape": [1], "data": [1.0]}]}
    req = urllib.request.Request(
        f"http://{served.http.url}/v2/models/reviews/infer", data=json.dumps(body).encode()
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(req, timeout=30)
    rest = json.loads(caught.value.read())["error"]
    caught.value.close()
    client = served.client()
    try:
        code, message = _code(
            lambda: client.infer("reviews", [_input("text", np.ones(1, np.float32), "FP32")])
        )
    finally:
        client.close()
    assert code == grpc.StatusCode.INVALID_ARGUMENT and message == rest


def test_keys_deadlines_a_full_queue_and_the_repository_extension(cancer_package, cancer_splits):
    server = Served(
        [f"cancer={cancer_package}"],
        Limits(timeout_s=0.2),
        settings=BatchSettings(max_batch_size=2, max_queue_delay_ms=0, max_queue=4),
        api_keys={"predict-key-123": "predict", "admin-key-12345": "admin"},
    )
    import tritonclient.grpc as triton

    client = server.client()
    frame = cancer_splits.test.X.iloc[:2]
    columns = [_input(c, frame[c].to_numpy(np.float64), "FP64") for c in frame.columns]
    user = {"authorization": "Bearer predict-key-123"}
    admin = {"authorization": "Bearer admin-key-12345"}
    try:
        assert client.is_server_live()  # health stays open
        code, message = _code(lambda: client.infer("cancer", columns))
        assert code == grpc.StatusCode.UNAUTHENTICATED and "Bearer KEY" in message
        code, _ = _code(lambda: client.infer("cancer", columns, headers={"authorization": "x"}))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert client.infer("cancer", columns, headers=user).as_numpy("label").shape == (2,)
        code, message = _code(lambda: client.get_model_repository_index(headers=user))
        assert code == grpc.StatusCode.PERMISSION_DENIED and "'admin'" in message

        # the repository extension with tritonclient's own calls
        index = client.get_model_repository_index(headers=admin, as_json=True)
        assert index["models"] == [{"name": "cancer", "version": "1", "state": "READY"}]
        client.unload_model("cancer", headers=admin)
        code, _ = _code(lambda: client.infer("cancer", columns, headers=user))
        assert code == grpc.StatusCode.NOT_FOUND
        index = client.get_model_repository_index(headers=admin, as_json=True)
        assert index["models"][0]["state"] == "UNAVAILABLE"
        client.load_model("cancer", headers=admin)
        assert client.is_model_ready("cancer", headers=user)

        # the real model, made slower than the server's 0.2 s limit: DEADLINE_EXCEEDED
        batcher = server.repository.get("cancer").batcher
        run = batcher.run
        batcher.run = lambda items: (time.sleep(0.4), run(items))[1]
        code, message = _code(lambda: client.infer("cancer", columns, headers=user))
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED and "0.2 s" in message

        # a burst into a queue of 4 items: RESOURCE_EXHAUSTED for some, with the limit
        codes: list[Any] = []

        def done(result: Any, error: Any) -> None:
            codes.append(None if error is None else (error.status(), error.message()))

        for _ in range(10):
            client.async_infer("cancer", columns, done, headers=user)
        deadline = time.monotonic() + 30
        while len(codes) < 10:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        refused = [c for c in codes if c is not None and "RESOURCE_EXHAUSTED" in c[0]]
        assert refused and all("limit 4" in message for _, message in refused), codes
    finally:
        client.close()
        server.stop()
    assert triton  # imported for the InferInput helpers


def test_aliases_are_followed_over_grpc(tmp_path, monkeypatch):
    """Hot reload: the gRPC service answers with the version the registry alias points at
    now, as REST does (one repository)."""
    from tuneserve.registry import Registry
    from tuneserve.training import train

    monkeypatch.setenv("TUNESERVE_HOME", str(tmp_path / "home"))
    registry = Registry()
    for seed in (0, 1):
        path = train("iris", tmp_path / f"v{seed}", backbone="logreg", seed=seed).package.path
        registry.register(path, "iris")
    registry.promote("iris", 1)
    server = Served(["iris"], watch_interval=0.05)
    client = server.client()
    rows = np.array([[5.9, 3.0, 4.2, 1.5]], dtype=np.float64)
    try:
        for target in ("2", "1", "2"):
            registry.promote("iris", target)
            deadline = time.monotonic() + 30
            while server.repository.current["iris"] != target:
                assert time.monotonic() < deadline, f"the swap to {target} did not happen"
                time.sleep(0.02)
            result = client.infer("iris", [_input("input", rows, "FP64")])
            assert result.get_response().model_version == target
    finally:
        client.close()
        server.stop()


def test_a_compressed_message_is_held_to_the_limit_once_decompressed(served):
    """A gzip-compressed request of 380 kB of zeros (about 1 kB on the wire) is refused
    against the 200 kB limit: the limit is on the decompressed message, so a small
    compressed request cannot make the server hold a large one."""
    from tuneserve.serving.proto import grpc_predict_v2_pb2 as pb
    from tuneserve.serving.proto import grpc_predict_v2_pb2_grpc as pb_grpc

    request = pb.ModelInferRequest(model_name="digits")
    request.inputs.add(name="image", datatype="FP32", shape=[60, 40, 40])
    request.raw_input_contents.append(bytes(60 * 40 * 40 * 4))
    assert len(request.SerializeToString()) > 380_000
    with grpc.insecure_channel(served.grpc, compression=grpc.Compression.Gzip) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, caught.value.details()
    # a compressed request within the limit is served
    small = pb.ModelInferRequest(model_name="digits")
    small.inputs.add(name="image", datatype="FP32", shape=[1, 8, 8])
    small.raw_input_contents.append(bytes(64 * 4))
    with grpc.insecure_channel(served.grpc, compression=grpc.Compression.Gzip) as channel:
        reply = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(small, timeout=30)
    assert list(reply.outputs[0].shape) == [1, 10]


def test_the_clients_deadline_ends_the_work_on_the_server(cancer_package, cancer_splits):
    """A call whose deadline (0.1 s) ends before the model answers (0.5 s) is given up by
    the server at the deadline, not finished after it: counted as a 504, never a 200."""
    server = Served([f"cancer={cancer_package}"], Limits(timeout_s=10))
    client = server.client()
    frame = cancer_splits.test.X.iloc[:2]
    columns = [_input(c, frame[c].to_numpy(np.float64), "FP64") for c in frame.columns]
    batcher = server.repository.get("cancer").batcher
    run = batcher.run
    batcher.run = lambda items: (time.sleep(0.5), run(items))[1]
    try:
        code, _ = _code(lambda: client.infer("cancer", columns, client_timeout=0.1))
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED
        time.sleep(1.0)  # past the model's 0.5 s: a server that ignored the deadline is done
        metrics = server.metrics()
        assert 'tuneserve_requests_total{api="grpc",code="504",model="cancer"} 1.0' in metrics
        assert 'api="grpc",code="200"' not in metrics
    finally:
        client.close()
        server.stop()


def test_counts_are_checked_before_values_are_read(served):
    """More items than --max-items (300), or more elements than the shape, are refused
    before the values become objects: 40,000 empty BYTES elements cost no 40,000 Python
    objects."""
    from tuneserve.serving.proto import grpc_predict_v2_pb2 as pb
    from tuneserve.serving.proto import grpc_predict_v2_pb2_grpc as pb_grpc

    typed = pb.ModelInferRequest(model_name="reviews")
    tensor = typed.inputs.add(name="text", datatype="BYTES", shape=[1])
    tensor.contents.bytes_contents.extend([b""] * 40_000)  # 80 kB, within the 200 kB
    raw = pb.ModelInferRequest(model_name="reviews")
    raw.inputs.add(name="text", datatype="BYTES", shape=[1])
    raw.raw_input_contents.append(bytes(4 * 40_000))  # 40,000 empty elements
    many = pb.ModelInferRequest(model_name="reviews")
    many.inputs.add(name="text", datatype="BYTES", shape=[40_000])
    many.raw_input_contents.append(bytes(4 * 40_000))
    cases = [
        (typed, "holds 1 elements but 40000 were sent"),
        (raw, "more BYTES elements than its shape's 1"),
        (many, "40000 inputs in one request; the limit is 300"),
    ]
    with grpc.insecure_channel(served.grpc) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for message, text in cases:
            with pytest.raises(grpc.RpcError) as caught:
                stub.ModelInfer(message, timeout=30)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert text in caught.value.details(), caught.value.details()
    # REST refuses the count first too: 400 images that are not base64, over the limit
    body = {"inputs": ["not base64 !"] * 400}
    request = urllib.request.Request(
        f"http://{served.http.url}/v1/models/digits/predict", json.dumps(body).encode()
    )
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=30)
    with error.value as reply:
        assert "400 inputs in one request; the limit is 300" in json.loads(reply.read())["error"]
