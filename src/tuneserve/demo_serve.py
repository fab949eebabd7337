"""The demo's last step: serve the promoted model, call it over HTTP and gRPC, print how
to."""

from __future__ import annotations

import base64
import json
import socket
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np


def _port(preferred: int) -> int:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=30) as reply:
        return dict(json.loads(reply.read()))


def serve_and_call(
    con: Any, out: Path, model: str, image: np.ndarray, keep_serving: bool | None = None
) -> dict[str, Any]:
    """Serve ``models:/<model>@champion`` over HTTP and gRPC, send a simple-JSON, an OIP
    and an OIP-over-gRPC request, print each with a working curl command or tritonclient
    snippet; then serve until Ctrl-C on a terminal, or stop cleanly without one."""
    import uvicorn
    from PIL import Image

    from tuneserve.serving import ModelSpec, Repository, create_app

    repository = Repository([ModelSpec.parse(model)])
    repository.load_all()
    port = _port(8000)
    grpc_port = _port(8001 if port != 8001 else 8002)
    app = create_app(repository, grpc_address=("127.0.0.1", grpc_port))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    base = f"http://127.0.0.1:{port}"
    pixels = (image[:, :, 0] * 255).round().astype(np.uint8)
    png = out / "digit-for-the-server.png"
    Image.fromarray(pixels, mode="L").save(png)

    simple = {"inputs": [base64.b64encode(png.read_bytes()).decode()]}
    (out / "request-simple.json").write_text(json.dumps(simple))
    answer = _post(f"{base}/v1/models/{model}/predict", simple)
    con.print(f"simple JSON  -> {answer['predictions'][0]['label']} (version {answer['version']})")
    simple_cmd = f"curl -s -d @{out / 'request-simple.json'} {base}/v1/models/{model}/predict"
    con.print("  " + simple_cmd, markup=False, soft_wrap=True)

    oip = {
        "inputs": [
            {
                "name": "image",
                "shape": [1, *pixels.shape],
                "datatype": "UINT8",
                "data": pixels.reshape(-1).tolist(),
            }
        ]
    }
    (out / "request-oip.json").write_text(json.dumps(oip))
    reply = _post(f"{base}/v2/models/{model}/infer", oip)
    label = next(o for o in reply["outputs"] if o["name"] == "label")["data"][0]
    con.print(f"Open Inference Protocol -> {label}")
    oip_cmd = f"curl -s -d @{out / 'request-oip.json'} {base}/v2/models/{model}/infer"
    con.print("  " + oip_cmd, markup=False, soft_wrap=True)
    con.print("  " + _snippet("http", port, model, png), markup=False, soft_wrap=True)
    grpc_label = _call_grpc(grpc_port, model, png.read_bytes())
    con.print(f"gRPC (Open Inference Protocol) -> {grpc_label}")
    con.print("  " + _snippet("grpc", grpc_port, model, png), markup=False, soft_wrap=True)
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    if keep_serving if keep_serving is not None else interactive:
        con.print(
            f"[bold]serving {model} on {base} (docs: {base}/docs) and gRPC on "
            f"127.0.0.1:{grpc_port}; Ctrl-C stops[/bold]"
        )
        try:
            while thread.is_alive():
                thread.join(0.5)
        except KeyboardInterrupt:
            pass
    server.should_exit = True
    thread.join(timeout=30)
    con.print("server stopped cleanly")
    return {"simple": answer, "oip": reply, "grpc": grpc_label, "port": port}


def _snippet(transport: str, port: int, model: str, png: Path) -> str:
    """A one-line tritonclient call (``http`` or ``grpc``) that sends the PNG file."""
    return (
        f'python -c "import numpy as np, tritonclient.{transport} as t; '
        f"c = t.InferenceServerClient('127.0.0.1:{port}'); "
        "i = t.InferInput('image', [1], 'BYTES'); "
        f"i.set_data_from_numpy(np.array([open('{png}', 'rb').read()], dtype=object)); "
        f"print(c.infer('{model}', [i]).as_numpy('label'))\""
    )


def _call_grpc(port: int, model: str, png: bytes) -> str:
    """The label the gRPC service gives the PNG file, asked with Triton's gRPC client."""
    import tritonclient.grpc as triton

    client = triton.InferenceServerClient(f"127.0.0.1:{port}")
    try:
        tensor = triton.InferInput("image", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([png], dtype=object))
        label = client.infer(model, [tensor]).as_numpy("label")[0]
    finally:
        client.close()
    return str(label.decode() if isinstance(label, bytes) else label)
