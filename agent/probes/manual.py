"""``schoolnet agent probe``: run a site's probes once, now, and print what they measured.

For the person at the NOC who wants an answer now ("is the school's line slow right
now?"), and for commissioning a new site box. The running agent's scheduled results are
what reaches the database; this command only prints (text, or one JSON point per line
with ``--json``). A throughput test fills the school's line for its duration, so in
lesson hours it needs ``--force``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Sequence

from agent.probes import build_sources, throughput_source
from agent.source import Source
from schoolnet.configfile import ConfigError
from schoolnet.inventory import Site, load_site
from schoolnet.wire import Point

EXIT_OK = 0
EXIT_STARTUP = 3  # bad site config, no CAP_NET_RAW, nothing configured
EXIT_LESSONS = 4  # a throughput test in lesson hours without --force

_SHOWN = ("ok", "loss_pct", "rtt_avg_ms", "rtt_p95_ms", "jitter_ms", "connect_ms",
          "response_ms", "status", "resolve_ms", "rcode", "rate_mbps", "contract_mbps",
          "ratio_to_contract", "error")


def format_point(p: Point) -> str:
    """One line per point: measurement, tags, the fields a person looks at first."""
    tags = " ".join(f"{k}={v}" for k, v in p.tags.items())
    vals = []
    for k in _SHOWN:
        v = p.fields.get(k)
        if v is None:
            continue
        vals.append(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}")
    return f"{p.measurement:<17} {tags:<48} {' '.join(vals)}"


async def gather(sources: Sequence[Source], now_ns: int) -> list[Point]:
    """Every source once, concurrently (each failure becomes a printed line)."""
    results = await asyncio.gather(*(s.collect(now_ns) for s in sources),
                                   return_exceptions=True)
    points: list[Point] = []
    for src, res in zip(sources, results, strict=True):
        if isinstance(res, BaseException):
            print(f"{src.name}: failed: {type(res).__name__}: {res}", file=sys.stderr)
        else:
            points.extend(res)
    for src in sources:
        close = getattr(src, "close", None)
        if close is not None:
            await close()
    return points


def _emit(points: list[Point], as_json: bool) -> None:
    for p in points:
        print(json.dumps(p.to_json()) if as_json else format_point(p))


async def _throughput(site: Site, *, force: bool, as_json: bool) -> int:
    src = throughput_source(site)
    if src is None:
        print("no probes.throughput in this site's config (and tenant defaults)",
              file=sys.stderr)
        return EXIT_STARTUP
    now = time.time()
    if src.schedule.in_lessons(now) and not force:
        print("it is lesson time at this site: a throughput test would fill the school's "
              "line; use --force to run it anyway", file=sys.stderr)
        return EXIT_LESSONS
    _emit(await src.run_now(time.time_ns()), as_json)
    return EXIT_OK


async def _probes(site: Site, *, as_json: bool) -> int:
    sources = [s for s in build_sources(site) if s.name != "probe:throughput"]
    if not sources:
        print("no probes in this site's config (probes.targets, services, dns)",
              file=sys.stderr)
        return EXIT_STARTUP
    _emit(await gather(sources, time.time_ns()), as_json)
    return EXIT_OK


def run(site_config: str, *, throughput: bool = False, force: bool = False,
        as_json: bool = False) -> int:
    """Load the site, run its probes (or one throughput test) once; the exit code."""
    try:
        site = load_site(site_config)
    except ConfigError as exc:
        print(f"schoolnet agent probe: bad site config {site_config}\n{exc}", file=sys.stderr)
        return EXIT_STARTUP
    try:
        if throughput:
            return asyncio.run(_throughput(site, force=force, as_json=as_json))
        return asyncio.run(_probes(site, as_json=as_json))
    except PermissionError as exc:  # RawSocketPermissionError names CAP_NET_RAW
        print(f"schoolnet agent probe: cannot start: {exc}", file=sys.stderr)
        return EXIT_STARTUP
