"""The bundled Hermes simulator: deterministic data plus an HTTP server that keeps the contract.

Why it exists: the pipeline must be demonstrable and testable without the real Hermes. The
simulator serves exactly the routes, pagination and error shapes of
``docs/hermes-api.yaml`` and can misbehave on purpose (rate limits, 5xx, garbage bodies,
hangs, 404 ids, awkward identifiers) so a crawler's retry and encoding logic is exercised.

Two halves:

* :class:`Universe` is the truth, computed without HTTP: every warrior, troop, data group
  and record is a pure function of ``(seed, indices)``, so tests can compare a crawl's
  output with :meth:`Universe.expected_rows` and its call count with
  :meth:`Universe.expected_calls`. Each group's records are generated on demand from a
  stable hash (never Python's salted ``hash()``), so the 1.2M-record "full" preset costs
  nothing until asked.
* :class:`HermesSimulator` serves a universe over HTTP/1.1 keep-alive, one ``send`` per
  response (a split header/body write stalls every request ~40 ms on delayed ACK).

What a crawler author can rely on:

* Ids listed in ``SimConfig.not_found_ids`` still appear in their parent's list (so a crawl
  meets them), but any path naming them answers 404; :meth:`Universe.expected_calls` counts
  that 404 as one call and :meth:`Universe.expected_rows` leaves their records out.
* Path segments are split on "/" first, then percent-decoded: encode each id with
  ``quote(id, safe="")``. Awkward ids hold spaces, ``+ = ' % ~ ( ) , : @`` and other
  scripts, and literal ``%20`` / ``%2F`` / ``%25`` text, so double or missing encoding
  shows up as 404 or wrong rows.
* Page tokens are opaque, about 65 characters, start with ``hp1+`` and contain base64's
  ``+ / =``: send them as a query parameter (``params=``), never pasted into the URL.
  They are signed and bound to their list: tampered or foreign tokens answer 400. The same
  seed gives the same tokens, so a saved token still works after a restart.
* Faults (after auth, never on /v1/health) in this order: the outage window's 429 to every
  call (``outage_at_s``, Retry-After 1), rate limit 429 (Retry-After = ceil of the wait,
  or an HTTP-date), a fixed share of the calls within the limit refused whatever the rate
  (``refuse_share``, Retry-After 1), injected 429 (Retry-After 0 or 1), 500/502/503/504,
  a 200 whose body is not JSON, a hang of ``hang_s`` before a normal answer.

Any described API (issue 21): ``HermesSimulator(config, api=description)`` (``fanout hermes
serve --api FILE``, ``run_in_subprocess(config, api=description)``) serves what the
description says (its paths, fixed query, pagination style, items path, auth, health) over
a :class:`~fanout.simulator.described.DescribedUniverse`, a seeded tree sized per preset and
number of levels (``SimConfig.from_size(size, levels=n)``, ``--level-sizes``). Its secret is
``--token``, else the description's ``auth.env`` variable, else a dev secret
(``truth.default_secret``). The rate limit, 429s, refusals, outage, 5xx, garbage, hangs,
latency, drip and ``not_found_ids``, ``awkward_ids``, ``dot_ids``, ``long_ids`` apply to
any API, ``cursor_loop`` to token-paginated lists and ``bad_records`` as the columns allow
(``described.BAD_ROW_KINDS``); ``duplicate_ids`` and ``changing_listings`` are Hermes'
only. Hermes' own description is served by today's code, byte for byte.
:mod:`~fanout.simulator.truth` gives the truth of any description (``expected_rows(api,
config, first_ids)``: the output's column order, normalized), ``rows_from_frame`` and
``compare_rows`` to hold a run's rows against it, and ``simulator_config`` and
``universe_for`` for a demo or test that starts one.

Modules: :mod:`~fanout.simulator.config` (SimConfig, sizes), :mod:`~fanout.simulator.universe`
(the truth), :mod:`~fanout.simulator.names` (ids) and :mod:`~fanout.simulator.records`
(record rendering),
:mod:`~fanout.simulator.page_tokens`, :mod:`~fanout.simulator.rate_limit`,
:mod:`~fanout.simulator.faults`, :mod:`~fanout.simulator.stats`,
:mod:`~fanout.simulator.transport` (HTTP/1.1 plumbing), :mod:`~fanout.simulator.server`
(routes and answers), :mod:`~fanout.simulator.described` (a described API's truth),
:mod:`~fanout.simulator.described_server` (its answers), :mod:`~fanout.simulator.truth`
and :mod:`~fanout.simulator.cli`.
"""

from __future__ import annotations

from fanout.simulator.cli import (
    add_serve_arguments,
    api_from_args,
    config_from_args,
    main,
    run_in_subprocess,
    serve_from_args,
)
from fanout.simulator.config import SIZES, RetryAfterFormat, SimConfig  # noqa: F401 (re-exported as before)
from fanout.simulator.described import DescribedUniverse
from fanout.simulator.server import HermesSimulator
from fanout.simulator.stats import SimStats
from fanout.simulator.truth import expected_rows, simulator_config, universe_for
from fanout.simulator.universe import Universe

__all__ = [
    "SIZES",
    "DescribedUniverse",
    "HermesSimulator",
    "SimConfig",
    "SimStats",
    "Universe",
    "add_serve_arguments",
    "api_from_args",
    "config_from_args",
    "expected_rows",
    "main",
    "run_in_subprocess",
    "serve_from_args",
    "simulator_config",
    "universe_for",
]
