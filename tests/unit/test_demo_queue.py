"""The demo's queue step says why it skips when no Redis answers, and goes on."""

from __future__ import annotations

import socket

from rich.console import Console


def test_the_queue_step_is_skipped_with_a_reason_without_redis(tmp_path):
    from tuneserve.demo_queue import queue_round_trip

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    con = Console(record=True, width=200)
    url = f"redis://127.0.0.1:{port}/0"
    assert queue_round_trip(con, tmp_path, "digits", tmp_path / "x.png", url) is None
    text = con.export_text()
    assert f"queue: skipped, no Redis answers at {url}" in text
    assert "tuneserve worker --model digits" in text
    assert not (tmp_path / "worker.log").exists()  # no worker was started
