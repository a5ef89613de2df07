"""Command-line hooks: ``fanout hermes serve`` / ``python -m fanout.simulator`` options, and
:func:`run_in_subprocess` for benchmarks that need the server out of their process.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fanout.simulator.config import SIZES, SimConfig
from fanout.simulator.described import DescribedUniverse, is_hermes
from fanout.simulator.server import HermesSimulator
from fanout.simulator.truth import default_secret
from fanout_core.api_description import ApiDescription
from fanout_core.api_description import load as load_api


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's options to a (sub)parser; defaults of None mean 'from the preset'."""
    from fanout.cli.common import (
        integer,
        non_negative_float,
        non_negative_int,
        port_number,
        positive_float,
        positive_int,
        share,
    )

    g = parser.add_argument_group("Hermes simulator")
    g.add_argument(
        "--api",
        default=None,
        metavar="FILE",
        help="serve the API this description file describes (default: Hermes); its secret is "
        "--token, else its auth env variable, else a fixed dev secret",
    )
    g.add_argument(
        "--level-sizes",
        type=_level_sizes,
        default=None,
        metavar="N,N,...",
        help="a described API's tree: items per list at each level, top first, the last the "
        "rows of each leaf list (default: from --size)",
    )
    g.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    g.add_argument("--port", type=port_number, default=8080, help="port (default 8080; 0 = any free)")
    g.add_argument("--size", choices=SIZES, default=None, help="data preset (default: small)")
    g.add_argument("--seed", type=integer, default=None, help="seed of the generated data")
    g.add_argument("--warriors", type=positive_int, default=None, help="number of warriors")
    g.add_argument("--troops-per-warrior", type=non_negative_int, default=None, help="troops of each warrior")
    g.add_argument(
        "--groups-per-troop", type=non_negative_int, default=None, help="data groups of each troop"
    )
    g.add_argument(
        "--records-per-group", type=non_negative_int, default=None, help="records of each data group"
    )
    g.add_argument(
        "--heavy-first-warrior",
        type=positive_int,
        default=None,
        metavar="K",
        help="the first warrior lists K times the troops of the others (a skewed tree)",
    )
    g.add_argument(
        "--heavy-tailed-records",
        action="store_true",
        default=None,
        help="data-group sizes drawn from a heavy-tailed (Pareto) distribution",
    )
    g.add_argument("--page-size", type=positive_int, default=None, help="default page size")
    g.add_argument("--awkward-ids", action="store_true", default=None, help="hostile ids")
    g.add_argument(
        "--token",
        default=None,
        help="the secret calls must carry (default: $HERMES_TOKEN, or the --api description's auth env "
        "variable; else sim-token, sim-user:sim-token for basic auth)",
    )
    g.add_argument(
        "--rate-limit", type=positive_float, default=None, help="requests/s per token (429 above it)"
    )
    g.add_argument("--rate-burst", type=positive_float, default=None, help="token bucket size")
    g.add_argument(
        "--retry-after-format",
        choices=("seconds", "http-date"),
        default=None,
        help="how a 429 says Retry-After (default seconds)",
    )
    g.add_argument("--error-rate-5xx", type=share, default=None, help="share of calls answered 5xx (0 to 1)")
    g.add_argument("--error-rate-429", type=share, default=None, help="share of calls answered 429 (0 to 1)")
    g.add_argument(
        "--garbage-rate", type=share, default=None, help="share of 200s whose body is not JSON (0 to 1)"
    )
    g.add_argument("--hang-rate", type=share, default=None, help="share of calls that hang (0 to 1)")
    g.add_argument("--hang-s", type=non_negative_float, default=None, help="seconds a hang lasts")
    g.add_argument("--latency-ms", type=non_negative_float, default=None, help="added to every request")
    g.add_argument(
        "--latency-jitter-ms",
        type=non_negative_float,
        default=None,
        help="plus a uniform draw from [0, this) per request",
    )
    g.add_argument("--not-found", action="append", default=None, metavar="ID", help="answer 404 (repeat)")
    g.add_argument("--fault-seed", type=integer, default=None, help="seed of the injected faults")
    h = parser.add_argument_group("hostile modes (off by default; see SimConfig for the truth under each)")
    h.add_argument(
        "--duplicate-ids",
        action="store_true",
        default=None,
        help="troop and data-group listings name the last item of page one again on page two",
    )
    h.add_argument(
        "--changing-listings",
        action="store_true",
        default=None,
        help="odd fetches of a troop's data-group listing add one extra data group, even ones lack it",
    )
    h.add_argument(
        "--cursor-loop",
        choices=("repeat", "cycle"),
        default=None,
        help="looping lists: next_page_token repeats (A -> A) or cycles (A -> B -> A) forever",
    )
    h.add_argument(
        "--cursor-loop-id",
        action="append",
        default=None,
        metavar="ID",
        help="the list below this id loops (repeat; default: the first data group's records)",
    )
    h.add_argument(
        "--drip-bytes-per-s",
        type=positive_float,
        default=None,
        metavar="N",
        help="write answers a few bytes at a time, N bytes/s on average",
    )
    h.add_argument("--drip-share", type=share, default=None, help="share of answers that drip (default 1.0)")
    h.add_argument(
        "--dot-ids",
        action="store_true",
        default=None,
        help='warriors and troops named "." and ".." (served only when sent as %%2E / %%2E%%2E)',
    )
    h.add_argument(
        "--long-ids",
        action="store_true",
        default=None,
        help="every id 128 non-Latin characters long (keys that must be shortened)",
    )
    h.add_argument(
        "--refuse-share",
        type=share,
        default=None,
        metavar="P",
        help="answer 429 (Retry-After: 1) to a share P of the calls within the rate limit, "
        "whatever the rate (0.2: every 5th call)",
    )
    h.add_argument(
        "--outage-at",
        type=non_negative_float,
        default=None,
        metavar="S",
        help="S seconds after starting, answer 429 (Retry-After: 1) to every call for --outage-s",
    )
    h.add_argument(
        "--outage-s",
        type=positive_float,
        default=None,
        metavar="S",
        help="how long the --outage-at window lasts (default 60)",
    )
    h.add_argument(
        "--bad-records",
        action="store_true",
        default=None,
        help="four data groups hold one altered record: 10**400, NaN, no metric (invalid), "
        "lower-case t/z timestamp (valid)",
    )
    g.add_argument("--config-json", default=None, help=argparse.SUPPRESS)


def _level_sizes(text: str) -> tuple[int, ...]:
    parts = text.split(",")
    if not all(p.strip().isascii() and p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"must be whole numbers separated by commas, got {text!r}")
    return tuple(int(p) for p in parts)


_HERMES_COUNTS = ("warriors", "troops_per_warrior", "groups_per_troop", "records_per_group")


def api_from_args(args: argparse.Namespace) -> ApiDescription | None:
    """The description ``--api`` names (None: Hermes); ApiDescriptionError (one line) if bad."""
    path = getattr(args, "api", None)
    return None if path is None else load_api(path)


def config_from_args(args: argparse.Namespace, api: ApiDescription | None = None) -> SimConfig:
    """A SimConfig from parsed serve arguments: the preset (scaled to ``api``'s levels),
    then every flag given. ``api`` None or Hermes' is served as Hermes."""
    if getattr(args, "config_json", None):
        return SimConfig.from_json(args.config_json)
    described = api is not None and not is_hermes(api)
    levels = len(api.levels) if api is not None else 4
    name = api.name if api is not None else "hermes"
    if described:
        for count in _HERMES_COUNTS:
            if getattr(args, count, None) is not None:
                flag = "--" + count.replace("_", "-")
                raise ValueError(f"{flag} counts Hermes' levels; give {name} --level-sizes")
    elif getattr(args, "level_sizes", None) is not None:
        raise ValueError("--level-sizes shapes a described API (--api); Hermes takes --warriors and the rest")
    base = SimConfig.from_size(args.size, levels=levels) if args.size else SimConfig()
    changes: dict[str, Any] = {}
    direct = {
        "seed": "seed",
        "warriors": "warriors",
        "troops_per_warrior": "troops_per_warrior",
        "groups_per_troop": "groups_per_troop",
        "records_per_group": "records_per_group",
        "heavy_first_warrior": "heavy_first_warrior",
        "heavy_tailed_records": "heavy_tailed_records",
        "page_size": "default_page_size",
        "awkward_ids": "awkward_ids",
        "rate_limit": "rate_limit",
        "rate_burst": "rate_burst",
        "retry_after_format": "retry_after_format",
        "error_rate_5xx": "error_rate_5xx",
        "error_rate_429": "error_rate_429",
        "garbage_rate": "garbage_rate",
        "hang_rate": "hang_rate",
        "hang_s": "hang_s",
        "fault_seed": "fault_seed",
        "duplicate_ids": "duplicate_ids",
        "changing_listings": "changing_listings",
        "cursor_loop": "cursor_loop",
        "drip_bytes_per_s": "drip_bytes_per_s",
        "drip_share": "drip_share",
        "dot_ids": "dot_ids",
        "long_ids": "long_ids",
        "bad_records": "bad_records",
        "refuse_share": "refuse_share",
        "outage_at": "outage_at_s",
        "outage_s": "outage_s",
        "level_sizes": "level_sizes",
    }
    for arg, name in direct.items():
        value = getattr(args, arg, None)
        if value is not None:
            changes[name] = value
    if getattr(args, "latency_ms", None) is not None:
        changes["latency_s"] = args.latency_ms / 1000.0
    if getattr(args, "latency_jitter_ms", None) is not None:
        changes["latency_jitter_s"] = args.latency_jitter_ms / 1000.0
    if getattr(args, "not_found", None):
        changes["not_found_ids"] = frozenset(args.not_found)
    if getattr(args, "cursor_loop_id", None):
        changes["cursor_loop_ids"] = frozenset(args.cursor_loop_id)
    changes["token"] = args.token or default_secret(api if described else None)
    config = dataclasses.replace(base, **changes)
    if described:
        config.sizes_for(levels)  # --level-sizes must name every level
    return config


def serve_from_args(args: argparse.Namespace) -> int:
    """Run the simulator in the foreground until SIGINT or SIGTERM; returns the exit code."""
    try:
        if not 0 <= args.port <= 65535:
            raise ValueError(f"--port must be between 0 and 65535 (0: any free port), got {args.port}")
        api = api_from_args(args)
        config = config_from_args(args, api)
        sim = HermesSimulator(config, host=args.host, port=args.port, api=api)
    except ValueError as exc:
        print(f"hermes simulator: {exc}", file=sys.stderr)
        return 2
    try:
        url = sim.start()
    except OSError as exc:  # typically the port is taken
        print(f"hermes simulator: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    done = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        done.set()

    # Handlers first, then the URL: whoever reads the URL may stop us at once.
    previous: dict[signal.Signals, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # not the main thread: rely on the caller
            previous[sig] = signal.signal(sig, on_signal)
    calls = sim.universe.expected_calls()
    if isinstance(sim.universe, DescribedUniverse):
        sizes = " x ".join(str(n) for n in sim.universe.sizes)
        what = f"{sim.universe.api.name} simulator listening on {url} ({sizes} items per list"
    else:
        what = f"hermes simulator listening on {url} ({config.warriors} warriors"
    print(f"{what}, ~{calls} calls for a full crawl)", flush=True)
    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


def _package_doc() -> str | None:
    import fanout.simulator

    return fanout.simulator.__doc__


def main(argv: list[str] | None = None) -> int:
    """``python -m fanout.simulator``: the same options as ``fanout serve``."""
    from fanout.cli.common import FanoutParser

    parser = FanoutParser(prog="python -m fanout.simulator", description=_package_doc())
    add_serve_arguments(parser)
    return serve_from_args(parser.parse_args(argv))


@contextlib.contextmanager
def run_in_subprocess(
    config: SimConfig | None = None,
    host: str = "127.0.0.1",
    timeout: float = 30.0,
    api: ApiDescription | None = None,
) -> Iterator[str]:
    """Serve ``config`` (for ``api``; None: Hermes) from a separate Python process; yields
    the base URL once healthy (once listening, for an API without a health path).

    Benchmarks need this: a server in the client's process competes with it for the GIL.
    """
    config = config or SimConfig()
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    argv = [sys.executable, "-m", "fanout.simulator", "--host", host, "--port", "0"]
    argv += ["--config-json", config.to_json()]
    health: str | None = "/v1/health"
    with contextlib.ExitStack() as stack:
        if api is not None and not is_hermes(api):
            described = stack.enter_context(tempfile.NamedTemporaryFile(suffix=".json"))
            described.write(api.to_json())
            described.flush()
            argv += ["--api", described.name]
            health = api.health
        yield from _serve_in_subprocess(argv, env, health, timeout)


def _serve_in_subprocess(
    argv: list[str], env: dict[str, str], health: str | None, timeout: float
) -> Iterator[str]:
    import urllib.request

    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errors, env=env)
        try:
            assert proc.stdout is not None
            deadline = time.monotonic() + timeout
            line = b""
            while not line.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0 or proc.poll() is not None:
                    errors.seek(0)
                    raise RuntimeError(
                        "simulator subprocess did not start: "
                        + errors.read().decode("utf-8", "replace")[-2000:]
                    )
                ready, _, _ = select.select([proc.stdout], [], [], min(left, 0.2))
                if ready:
                    line += os.read(proc.stdout.fileno(), 4096)
            url = line.decode().split(" listening on ", 1)[1].split()[0]
            while health is not None:
                try:
                    with urllib.request.urlopen(f"{url}{health}", timeout=1) as resp:
                        if resp.status == 200:
                            break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            yield url
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
