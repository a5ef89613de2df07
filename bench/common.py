"""What every benchmark shares: a measured window, per-process figures, peer processes, tables.

Why a peer runs in a process of its own: CPU seconds and peak RSS are only comparable
when each crawler is alone in its process (the simulator runs in yet another one):
``os.wait4`` hands the parent exactly that child's CPU (with its reaped worker
processes), and the child reports the peak RSS of its own process tree. Inside the child,
:class:`Window` measures the crawl itself (wall, CPU of the process and of any children
it waited for), excluding interpreter start-up and imports.

A peer is a module with ``run_peer(spec: dict) -> dict``; ``python -m bench.common peer
MODULE`` reads the spec as JSON on stdin, runs it inside a :class:`Window` with every
HTTP request counted at the transport (so the count does not depend on the peer's own
bookkeeping), and writes the figures as JSON to ``spec["result_file"]``.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-token"


# -- measuring ------------------------------------------------------------------------------


def _cpu(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def load_average() -> float:
    """The 1-minute load average (the machine is shared: every figure is quoted with it)."""
    return os.getloadavg()[0]


def peak_rss_mb() -> float:
    """This process's peak resident set so far, in MB (VmHWM; ru_maxrss as a fallback)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _tree(pid: int) -> list[int]:
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            found += _tree(int(child))
    return found


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class TreeRss:
    """Peak of the summed RSS of this process and all its descendants, sampled every 0.2 s.

    fanout's local runtime runs its Parquet-writing stage in worker processes, so the
    memory a machine must hold is the sum over the tree, not any one process's peak.
    """

    def __init__(self, interval_s: float = 0.2):
        self.interval_s = interval_s
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tree-rss", daemon=True)

    def sample(self) -> None:
        total = sum(_rss_kb(pid) for pid in _tree(os.getpid()))
        self.peak_mb = max(self.peak_mb, total / 1024)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> TreeRss:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


@dataclass
class Window:
    """Wall time and CPU seconds (this process plus waited-for children) between start and stop."""

    wall_s: float = 0.0
    cpu_s: float = 0.0
    _t0: float = 0.0
    _self0: float = 0.0
    _children0: float = 0.0

    def __enter__(self) -> Window:
        self._self0 = _cpu(resource.getrusage(resource.RUSAGE_SELF))
        self._children0 = _cpu(resource.getrusage(resource.RUSAGE_CHILDREN))
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_s = time.perf_counter() - self._t0
        self.cpu_s = (
            _cpu(resource.getrusage(resource.RUSAGE_SELF))
            - self._self0
            + _cpu(resource.getrusage(resource.RUSAGE_CHILDREN))
            - self._children0
        )


class RequestCounter:
    """Counts every HTTP request any ``requests`` session of this process sends.

    It wraps ``HTTPAdapter.send``, the one place every session (fanout's client, the plain
    crawler's, dlt's RESTClient) goes through, so the three peers are counted the same way.
    """

    def __init__(self) -> None:
        self.value = 0
        self.throttled = 0
        """Responses with status 429."""
        self._lock = threading.Lock()
        self._original: Any = None

    def snapshot(self) -> tuple[int, int]:
        """(requests sent, 429s received) so far."""
        with self._lock:
            return self.value, self.throttled

    def install(self) -> RequestCounter:
        from requests.adapters import HTTPAdapter

        if self._original is not None:
            return self
        original = self._original = HTTPAdapter.send

        def send(adapter: HTTPAdapter, request: Any, *args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.value += 1
            response = original(adapter, request, *args, **kwargs)
            if response.status_code == 429:
                with self._lock:
                    self.throttled += 1
            return response

        HTTPAdapter.send = send  # type: ignore[method-assign,assignment]
        return self

    def uninstall(self) -> None:
        from requests.adapters import HTTPAdapter

        if self._original is not None:
            HTTPAdapter.send = self._original  # type: ignore[method-assign]
            self._original = None

    def __enter__(self) -> RequestCounter:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.uninstall()


# -- peer processes -------------------------------------------------------------------------


@dataclass
class ProcessFigures:
    """What the parent learns from ``os.wait4``: exit code, wall and CPU seconds of that child."""

    exit_code: int
    wall_s: float
    cpu_s: float
    maxrss_mb: float
    """ru_maxrss as wait4 reports it: on Linux at least the parent's RSS when it forked the
    child, since exec carries the old image's high-water mark over. Peers report their
    own VmHWM instead (see peak_rss_mb)."""
    stderr_tail: str = ""


def run_child(
    argv: Sequence[str],
    *,
    stdin_text: str = "",
    env: dict[str, str] | None = None,
    timeout_s: float = 3600.0,
) -> ProcessFigures:
    """Run ``argv`` to the end and return its own rusage (not the simulator's, not ours)."""
    full_env = dict(os.environ if env is None else env)
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    started = time.perf_counter()
    with open(os.devnull, "wb") as devnull, tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(
            list(argv), stdin=subprocess.PIPE, stdout=devnull, stderr=errors, env=full_env, cwd=ROOT
        )
        assert proc.stdin is not None
        proc.stdin.write(stdin_text.encode())
        proc.stdin.close()
        deadline = started + timeout_s
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
        errors.seek(0)
        tail = errors.read().decode("utf-8", "replace")[-3000:]
    return ProcessFigures(
        exit_code=proc.returncode,
        wall_s=time.perf_counter() - started,
        cpu_s=_cpu(usage),
        maxrss_mb=usage.ru_maxrss / 1024,
        stderr_tail=tail,
    )


@dataclass
class PeerRun:
    """A peer's figures: what it reported from inside plus what wait4 saw from outside."""

    name: str
    report: dict[str, Any]
    process: ProcessFigures
    extra: dict[str, Any] = field(default_factory=dict)


def run_peer_process(
    name: str, module: str, spec: dict[str, Any], *, python: str | None = None, timeout_s: float = 3600.0
) -> PeerRun:
    """Run ``module.run_peer(spec)`` in a fresh interpreter (``python``, default this one)."""
    result_file = Path(spec["out_dir"]).parent / f"{name}-result.json"
    spec = {**spec, "result_file": str(result_file)}
    figures = run_child(
        [python or sys.executable, "-m", "bench.common", "peer", module],
        stdin_text=json.dumps(spec),
        timeout_s=timeout_s,
    )
    if figures.exit_code != 0 or not result_file.exists():
        raise RuntimeError(f"peer {name} failed (exit {figures.exit_code}):\n{figures.stderr_tail}")
    report = json.loads(result_file.read_text())
    result_file.unlink()
    return PeerRun(name=name, report=report, process=figures)


def _peer_child(module_name: str) -> int:
    """Inside the child: run the peer in a measured window and write its figures."""
    spec = json.loads(sys.stdin.read())
    module = importlib.import_module(module_name)
    counter = RequestCounter().install()
    with TreeRss() as tree, Window() as window:
        report = module.run_peer(spec)
    report.update(
        wall_s=window.wall_s,
        cpu_s=window.cpu_s,
        http_requests=counter.value,
        peak_rss_mb_in_process=peak_rss_mb(),
        peak_rss_mb_tree=max(tree.peak_mb, peak_rss_mb()),
    )
    Path(spec["result_file"]).write_text(json.dumps(report))
    return 0


# -- output ---------------------------------------------------------------------------------


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], stream: TextIO = sys.stdout, digits: int = 1
) -> None:
    """A plain aligned table: first column left-aligned, the figures right-aligned."""
    cells = [[fmt(v, digits) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.ljust(widths[i]) if i == 0 else v.rjust(widths[i]) for i, v in enumerate(values)
        ).rstrip()

    stream.write(line(list(headers)) + "\n")
    stream.write("  ".join("-" * w for w in widths) + "\n")
    for row in cells:
        stream.write(line(row) + "\n")
    stream.flush()


def machine() -> dict[str, Any]:
    """What a figure needs to be read by: cores and the load when it was taken."""
    return {"cpus": os.cpu_count(), "load_1m": round(load_average(), 2), "python": sys.version.split()[0]}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 2 and args[0] == "peer":
        return _peer_child(args[1])
    print("usage: python -m bench.common peer MODULE  (spec as JSON on stdin)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
