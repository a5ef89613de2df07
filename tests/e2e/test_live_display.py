"""The live display as a person sees it: under a pseudo-terminal 80 columns wide it redraws
in place (no line wraps, the screen does not scroll a line per redraw); in a pipe, plain lines."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

from .conftest import ROOT

CSI = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])")
COLUMNS = 80


def _in_a_terminal(
    argv: list[str], cwd: Path, columns: int = COLUMNS, timeout: float = 180
) -> tuple[int, str]:
    """Run ``argv`` with stdout and stderr on a pty of ``columns`` x 24; its exit code and output."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env.update(TERM="xterm-256color", PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "lambdas")]))
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env, close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(master)
    return proc.wait(timeout=10), b"".join(chunks).decode("utf-8", "replace")


def _screen_rows_and_widest(output: str) -> tuple[int, int]:
    """Replay the cursor: how many distinct rows the output used, and its widest visible run.

    Newlines move down, CSI n A moves up, carriage returns go to column 0; a display that
    redraws in place keeps coming back to the same rows, one that scrolls uses new ones.
    """
    row = rows = col = widest = 0
    pos = 0
    for m in [*CSI.finditer(output), None]:
        text = output[pos : m.start() if m else len(output)]
        for ch in text:
            if ch == "\n":
                row += 1
                col = 0
            elif ch == "\r":
                col = 0
            elif ch >= " ":
                col += 1
                widest = max(widest, col)
            rows = max(rows, row)
        if m is None:
            break
        pos = m.end()
        n = int(m.group(1) or 1) if m.group(1).isdigit() else 1
        if m.group(2) == "A":
            row = max(0, row - n)
        elif m.group(2) == "B":
            row += n
        elif m.group(2) == "G":
            col = n - 1
    return rows + 1, widest


def test_the_display_redraws_in_place_at_80_columns(tmp_path: Path):
    code, output = _in_a_terminal(
        [sys.executable, "-m", "fanout", "demo", "--size", "tiny", "--rate-limit", "25", "--bucket-dir", "b"],
        cwd=tmp_path,
    )
    assert code == 0, output
    assert "Traceback" not in output and "Warning" not in output
    redraws = output.count("\x1b[2K")  # each redraw clears the rows it rewrites
    assert redraws > 20, output  # it did redraw, several times a second
    rows, _ = _screen_rows_and_widest(output)
    # the display is what Rich draws with the cursor hidden; not one of its lines wraps
    display = output[output.index("\x1b[?25l") : output.rindex("\x1b[?25h")]
    _, widest = _screen_rows_and_widest(display)
    assert COLUMNS - 10 <= widest <= COLUMNS, display  # fitted to the width, not beyond it
    # the header, one row per stage and the run's line, then the summary: no row per redraw
    assert rows < 40, (rows, output)
    for stage in ("warriors", "troops", "data_groups"):
        assert stage in output
    assert "ETA" in output and "calls" in output and "429s" in output


def test_in_a_pipe_the_progress_is_plain_lines(tmp_path: Path):
    proc = subprocess.run(
        [sys.executable, "-m", "fanout", "demo", "--size", "tiny", "--rate-limit", "20", "--bucket-dir", "b"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "lambdas")])},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    assert "\x1b[" not in proc.stderr and "\r" not in proc.stderr
    progress = [line for line in proc.stderr.splitlines() if line.startswith("[")]
    assert progress, proc.stderr
    assert re.search(r"data_groups \d+/\d+ .* ETA", progress[-1])
    done, known = map(int, re.search(r"data_groups (\d+)/(\d+)", progress[-1]).groups())
    assert done == known > 0
