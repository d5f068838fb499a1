"""Conditions: from one validated point to "this entity is bad / fine now".

Pure functions, no I/O. Each takes the point, the entity's small memory (a JSON-able
dict the engine keeps and persists: consecutive failures, the latest result per probe
target) and the thresholds, and returns an :class:`Observation`. The engine turns
observations into outages (hold-down, flapping, dependencies); nothing here knows time
beyond what the caller passes.

The uplink conditions read the points the probe issue defines (docs/data-model.md,
docs/outages.md):

- ``probe_icmp`` (tags ``target``, ``target_kind``; fields ``loss_pct``, ``rtt_avg_ms``):
  *down* when every external target (``target_kind`` other than ``gateway``; all
  targets if there are no others) lost all echoes in its latest train; *degraded* when
  the mean loss or the mean RTT of the answering external targets is over threshold.
- ``probe_throughput`` (tag ``direction``; field ``ratio_to_contract``): *slow* after
  N consecutive tests of one direction below the share of the contract.
- ``uplink`` (fields ``util_in_pct``, ``util_out_pct``): *saturated* when either is over
  threshold during lesson hours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from schoolnet.alerting import Thresholds
from schoolnet.wire import FieldValue, Point

#: ifOperStatus values that mean "this port is down" (2 down, 6 notPresent,
#: 7 lowerLayerDown). 3 testing, 4 unknown and 5 dormant are not counted as down.
OPER_DOWN: Final = frozenset({2, 6, 7})
#: Probe targets that sit inside the site: answering them says nothing about the uplink.
LOCAL_TARGET_KINDS: Final = frozenset({"gateway", "lan"})
#: A probe target not heard from for this long is forgotten (removed from the config).
TARGET_TTL_S: Final = 900.0


@dataclass(slots=True)
class Observation:
    """The verdict of one point on one condition."""

    bad: bool
    #: Machine-readable reason: ``code`` plus parameters (mail templates localise it).
    detail: dict[str, Any] = field(default_factory=dict)
    #: The raw sample failed (even if the condition needs more failures to hold).
    suspect: bool = False


def _num(value: FieldValue | None) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    return None


def consecutive(mem: dict[str, Any], failed: bool, needed: int, key: str = "fails") -> bool:
    """Count consecutive failures in ``mem[key]``; True once ``needed`` are reached."""
    n = int(mem.get(key, 0)) + 1 if failed else 0
    if n:
        mem[key] = min(n, 1_000_000)
    else:
        mem.pop(key, None)
    return n >= needed


def device_observation(point: Point, mem: dict[str, Any], th: Thresholds) -> Observation | None:
    """``device`` point: down after N consecutive polls with ``reachable`` 0."""
    reachable = _num(point.fields.get("reachable"))
    if reachable is None:
        return None
    failed = reachable < 1
    bad = consecutive(mem, failed, th.device_failed_polls)
    return Observation(bad, {"code": "no_answer", "polls": mem.get("fails", 0)}, failed)


def interface_observation(point: Point, mem: dict[str, Any], th: Thresholds) -> Observation | None:
    """``interface`` point of a monitored port: down while admin-up and oper-down."""
    admin = _num(point.fields.get("admin_status"))
    oper = _num(point.fields.get("oper_status"))
    if admin is None or oper is None:
        return None
    # A port an admin shut down (admin_status 2) is not an outage, whatever its oper state.
    failed = admin == 1 and int(oper) in OPER_DOWN
    bad = consecutive(mem, failed, th.interface_failed_polls)
    return Observation(bad, {"code": "oper_down", "oper_status": int(oper)}, failed)


def record_icmp(point: Point, mem: dict[str, Any], now: float) -> None:
    """Keep the latest ``probe_icmp`` result per target in ``mem["targets"]``."""
    target = point.tags.get("target")
    loss = _num(point.fields.get("loss_pct"))
    if not target or loss is None:
        return
    rtt = _num(point.fields.get("rtt_avg_ms"))
    targets: dict[str, list[Any]] = mem.setdefault("targets", {})
    targets[target] = [loss, rtt, point.tags.get("target_kind", ""), now]
    for name in [n for n, v in targets.items() if now - float(v[3]) > TARGET_TTL_S]:
        del targets[name]
    if len(targets) > 64:  # bounded: the probe config lists a handful of targets
        oldest = min(targets, key=lambda n: float(targets[n][3]))
        del targets[oldest]


def _external(mem: dict[str, Any]) -> list[list[Any]]:
    targets = list(mem.get("targets", {}).values())
    external = [t for t in targets if t[2] not in LOCAL_TARGET_KINDS]
    return external or targets


def uplink_down(mem: dict[str, Any]) -> Observation | None:
    """Down when every external target lost all echoes in its latest train."""
    ext = _external(mem)
    if not ext:
        return None
    lost = sum(1 for t in ext if float(t[0]) >= 100.0)
    failed = lost == len(ext)
    return Observation(failed, {"code": "all_lost", "targets": len(ext)}, failed)


def uplink_quality(mem: dict[str, Any], th: Thresholds) -> Observation | None:
    """Degraded when mean loss or mean RTT of the answering external targets is high."""
    answering = [t for t in _external(mem) if float(t[0]) < 100.0]
    if not answering:
        return None  # nothing answers: that is "down", judged by uplink_down
    loss = sum(float(t[0]) for t in answering) / len(answering)
    rtts = [float(t[1]) for t in answering if t[1] is not None]
    rtt = sum(rtts) / len(rtts) if rtts else 0.0
    bad = loss > th.loss_pct or rtt > th.latency_ms
    return Observation(bad, {"code": "degraded", "loss_pct": round(loss, 1),
                             "rtt_ms": round(rtt, 1)}, bad)


def throughput_observation(point: Point, mem: dict[str, Any],
                           th: Thresholds) -> Observation | None:
    """``probe_throughput``: slow after N consecutive tests of one direction below share."""
    ratio = _num(point.fields.get("ratio_to_contract"))
    direction = point.tags.get("direction", "down")
    if ratio is None or direction not in ("down", "up"):
        return None
    consecutive(mem, ratio < th.throughput_min_ratio, th.throughput_failed_tests,
                key=f"fails_{direction}")
    mem[f"ratio_{direction}"] = round(ratio, 3)
    slow = [d for d in ("down", "up")
            if int(mem.get(f"fails_{d}", 0)) >= th.throughput_failed_tests]
    worst = slow[0] if slow else direction
    detail = {"code": "slow", "direction": worst, "ratio": mem.get(f"ratio_{worst}", ratio),
              "tests": th.throughput_failed_tests}
    return Observation(bool(slow), detail, ratio < th.throughput_min_ratio)


def saturation_observation(point: Point, th: Thresholds, lesson_time: bool) -> Observation | None:
    """``uplink`` point: saturated when utilization is over threshold in lesson hours."""
    util_in = _num(point.fields.get("util_in_pct"))
    util_out = _num(point.fields.get("util_out_pct"))
    if util_in is None and util_out is None:
        return None
    worst = max(v for v in (util_in, util_out) if v is not None)
    direction = "down" if util_in is not None and worst == util_in else "up"
    # Outside lesson hours a full line hurts nobody (and backups may fill it on purpose).
    bad = lesson_time and worst > th.saturation_pct
    return Observation(bad, {"code": "saturated", "direction": direction,
                             "util_pct": round(worst, 1)}, bad)


def aps_observation(down: int, total: int, th: Thresholds) -> Observation:
    """The site's access points as a group: a share (and a minimum number) down."""
    bad = total > 0 and down >= th.ap_min_down and down / total >= th.ap_down_share
    return Observation(bad, {"code": "aps_down", "down": down, "total": total}, bad)


def agent_observation(status: str, reason: str, silent_s: float | None,
                      limit_s: float) -> Observation:
    """The site connection: the retained status says offline, or nothing came for long."""
    if status == "offline":
        return Observation(True, {"code": "offline", "reason": reason[:80]}, True)
    if silent_s is not None and silent_s > limit_s:
        return Observation(True, {"code": "silent", "seconds": round(silent_s)}, True)
    return Observation(False, {"code": "online"})


def ap_observation(state: str, controller: str, status: str, clients: int | None,
                   mem: dict[str, Any], th: Thresholds) -> Observation:
    """An AP behind a controller after one complete poll of the controller.

    ``state`` is ``up``, ``not_up`` (listed in another state: ``status`` is the vendor's
    text) or ``missing`` (no longer in the controller's table: rebooting, no PoE, gone).
    Down after N consecutive such polls, as a device (``device_failed_polls``).
    """
    failed = state != "up"
    bad = consecutive(mem, failed, th.device_failed_polls)
    detail: dict[str, Any] = {
        "code": "ap_not_up" if state == "not_up" else "ap_missing",
        "controller": controller, "clients": "?" if clients is None else clients,
        "polls": mem.get("fails", 0)}
    if state == "not_up":
        detail["status"] = status or "?"
    return Observation(bad, detail, failed)
