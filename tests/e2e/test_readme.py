"""The README's tour, run the way a newcomer runs it, and the README's links.

Every ```bash / ```sh / ```python block between ``<!-- tour -->`` and ``<!-- /tour -->`` runs
in order, in an empty folder, with no TUNESERVE_* or MLFLOW_* variables (so the default
``./.tuneserve`` home and tracking are in force), no terminal, offline, and ``tuneserve``
on PATH from this virtualenv. A shell block runs under ``bash -e``: any failing command
fails the test, which shows that block and its output. The only edit made to the blocks is
the server's ports (8000 and gRPC's 8001 in the README), replaced by free ones. A
background server that a block starts (``tuneserve serve ... &``) is stopped at the end.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
#: The port the README's tour serves on; the test swaps in a free one.
README_PORT = "8000"
#: The tour server's gRPC port; swapped for a free one too.
README_GRPC_PORT = "8001"
SHELLS = ("bash", "sh")
BLOCK_TIMEOUT_S = 300  # a bound for a stuck block, far above the tour's normal minute


@dataclass(frozen=True)
class Block:
    language: str
    code: str
    line: int  # where the block starts in README.md, for messages


def tour_blocks(text: str) -> list[Block]:
    """The fenced code blocks between the tour markers, in order."""
    start, end = text.find("<!-- tour -->"), text.find("<!-- /tour -->")
    assert 0 <= start < end, "README.md has no <!-- tour --> ... <!-- /tour --> section"
    offset = text.count("\n", 0, start) + 1
    section = text[start:end]
    blocks = []
    for match in re.finditer(r"^```(\w*)\n(.*?)^```", section, re.S | re.M):
        line = offset + section.count("\n", 0, match.start())
        blocks.append(Block(match.group(1), match.group(2), line))
    return blocks


def newcomer_env() -> dict[str, str]:
    """This process's environment minus tuneserve's and MLflow's settings (conftest.py sets
    some for the rest of the suite), with this virtualenv's scripts first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TUNESERVE_", "MLFLOW_"))}
    scripts = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([scripts, env.get("PATH", "")])
    env["HF_HUB_OFFLINE"] = "1"
    return env


def free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (zombies do not count: an orphaned
    server is reaped by init, which some containers never do)."""
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: a signal of 0 tells whether the group exists
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended while we looked
        state, group = fields[0], int(fields[2])
        if group == pgid and state not in ("Z", "X"):
            return True
    return False


def stop_group(pgid: int) -> None:
    """SIGTERM for what a block left running (a server; what the README's ``kill %1``
    sends), then SIGKILL after 30 s. Not SIGINT: bash starts ``cmd &`` with SIGINT ignored."""
    for sig, wait_s in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not _group_alive(pgid):
            return


@pytest.fixture
def groups() -> Iterator[list[int]]:
    """Process groups of the blocks run; whatever is left in them is stopped at the end."""
    started: list[int] = []
    yield started
    for pgid in started:
        stop_group(pgid)


def run_block(block: Block, number: int, cwd: Path, logs: Path, groups: list[int]) -> None:
    script = logs / f"block{number}.{'py' if block.language == 'python' else 'sh'}"
    script.write_text(block.code)
    command = (
        [sys.executable, str(script)]
        if block.language == "python"
        else ["bash", "-e", "-o", "pipefail", str(script)]
    )
    output = logs / f"block{number}.out"
    # Output goes to a file, not a pipe: a server left in the background keeps writing to
    # it, and a pipe would never reach end-of-file while the server runs.
    with output.open("w") as out:
        proc = subprocess.Popen(
            command,
            cwd=cwd,
            env=newcomer_env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so a server it starts can be found
        )
        groups.append(proc.pid)
        try:
            code: int | str = proc.wait(timeout=BLOCK_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            stop_group(proc.pid)
            code = f"none: still running after {BLOCK_TIMEOUT_S} s"
    if code != 0:
        shown = output.read_text(errors="replace")[-8000:]
        pytest.fail(
            f"README.md block {number} ({block.language}, line {block.line}) failed, exit code "
            f"{code}:\n{block.code}\n--- output ---\n{shown}",
            pytrace=False,
        )


def test_the_tour_runs_as_written(tmp_path: Path, groups: list[int]) -> None:
    text = README.read_text(encoding="utf-8")
    blocks = tour_blocks(text)
    assert blocks, "the tour has no code blocks"
    languages = {b.language for b in blocks}
    assert languages <= {*SHELLS, "python"}, (
        f"the tour may hold only bash, sh and python blocks (the test runs each), got {languages}"
    )
    tour = "".join(b.code for b in blocks)
    if "tuneserve serve" in tour:  # the port is swapped for a free one, so it must be the known one
        assert f"--port {README_PORT}" in tour, f"the tour's server must use --port {README_PORT}"

    port, grpc_port = free_port(), free_port()
    folder = tmp_path / "newcomer"  # the empty folder the newcomer works in
    logs = tmp_path / "blocks"  # the scripts and their output, outside that folder
    folder.mkdir()
    logs.mkdir()
    for number, block in enumerate(blocks, start=1):
        code = re.sub(rf"\b{README_PORT}\b", port, block.code)
        code = re.sub(rf"\b{README_GRPC_PORT}\b", grpc_port, code)
        run_block(Block(block.language, code, block.line), number, folder, logs, groups)

    home = folder / ".tuneserve"
    assert (home / "mlflow" / "mlflow.db").is_file(), "the registry is not in ./.tuneserve"


def markdown_files() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_files(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)  # links in code are no links
    targets = re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", text)
    broken = []
    for target in targets:
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL or an anchor on the same page
        path = target.split("#", 1)[0]
        if not (page.parent / path).exists():
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)} links to missing files: {broken}"
