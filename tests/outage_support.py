"""Helpers shared by the outage tests: inventories with trees, and points as agents send them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml

from schoolnet.wire import Point

NS = 10**9


def school_devices(aps: int = 4, switches: int = 2) -> list[dict[str, Any]]:
    """A school: router (uplink) -> core-sw (Gi0/1 monitored) -> sw1.. -> ap1.. ."""
    devs: list[dict[str, Any]] = [
        {"name": "router", "host": "10.0.0.1", "role": "router"},
        {"name": "core-sw", "host": "10.0.0.2", "role": "switch", "parent": "router",
         "interfaces": {"Gi0/1": {"monitor": True}, "Gi0/2": {"monitor": True}}},
    ]
    for i in range(1, switches + 1):
        devs.append({"name": f"sw{i}", "host": f"10.0.1.{i}", "role": "switch",
                     "parent": "core-sw"})
    for i in range(1, aps + 1):
        devs.append({"name": f"ap{i}", "host": f"10.0.2.{i}", "role": "ap",
                     "parent": f"sw{(i - 1) % switches + 1}" if switches else "core-sw"})
    return devs


def write_tenant(root: Path, tenant: str, *, alerting: dict[str, Any] | None = None,
                 thresholds: dict[str, Any] | None = None, poll_interval_s: float = 60) -> Path:
    """Write ``root/<tenant>/tenant.yaml``."""
    tdir = root / tenant
    tdir.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {
        "tenant": tenant, "name": f"Schulträger {tenant}",
        "defaults": {"agent": {"poll_interval_s": poll_interval_s},
                     "snmp": {"version": "2c", "community": "public"}},
    }
    if thresholds:
        doc["defaults"]["thresholds"] = thresholds
    if alerting is not None:
        doc["alerting"] = alerting
    (tdir / "tenant.yaml").write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))
    return root


def write_site(root: Path, tenant: str, site: str, devices: list[dict[str, Any]], *,
               name: str | None = None, thresholds: dict[str, Any] | None = None) -> Path:
    """Write ``root/<tenant>/<site>.yaml`` with an uplink on the first device."""
    doc: dict[str, Any] = {"site": site, "name": name or f"Schule {site}"}
    if devices:
        doc["uplink"] = {"kind": "fibre", "down_mbit": 400, "up_mbit": 400,
                         "device": devices[0]["name"], "interface": "Gi0/0"}
    if thresholds:
        doc["thresholds"] = thresholds
    doc["devices"] = devices
    (root / tenant / f"{site}.yaml").write_text(
        yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))
    return root


def device_point(device: str, reachable: bool, t: float, role: str = "switch") -> Point:
    """A ``device`` point of one poll."""
    return Point("device", {"device": device, "role": role},
                 {"reachable": 1 if reachable else 0, "poll_ms": 12.5}, int(t * NS))


def port_point(device: str, ifname: str, up: bool, t: float, admin_up: bool = True) -> Point:
    """An ``interface`` point with admin/oper status."""
    return Point("interface", {"device": device, "ifname": ifname, "ifindex": "1"},
                 {"admin_status": 1 if admin_up else 2, "oper_status": 1 if up else 2,
                  "in_octets": 1}, int(t * NS))


def icmp_point(target: str, loss: float, t: float, rtt: float = 12.0,
               kind: str = "anchor") -> Point:
    """A ``probe_icmp`` point of one echo train."""
    fields: dict[str, int | float | bool | str] = {"loss_pct": float(loss), "sent": 10}
    if loss < 100:
        fields["rtt_avg_ms"] = rtt
    return Point("probe_icmp", {"target": target, "target_kind": kind}, fields, int(t * NS))


def probe_round(t: float, loss: float, rtt: float = 12.0) -> list[Point]:
    """One probe round: gateway answers, two external targets with ``loss``."""
    return [icmp_point("192.0.2.1", 0, t, 1.0, "gateway"),
            icmp_point("noc", loss, t, rtt, "noc"), icmp_point("anchor", loss, t, rtt)]


def controller_devices(aps: int = 0) -> list[dict[str, Any]]:
    """A school whose APs hang off a WLAN controller: router -> core-sw -> wlc."""
    devs = [
        {"name": "router", "host": "10.0.0.1", "role": "router"},
        {"name": "core-sw", "host": "10.0.0.2", "role": "switch", "parent": "router"},
        {"name": "wlc", "host": "10.0.0.3", "role": "controller", "parent": "core-sw"},
    ]
    return devs + school_devices(aps=aps, switches=0)[2:] if aps else devs


def controller_poll(aps: dict[str, str], t: float, *, controller: str = "wlc",
                    reachable: bool = True, clients: int = 5) -> list[Point]:
    """One poll of a WLAN controller as the agent sends it (device point first).

    ``aps``: name -> ``up`` (listed, status up, an ``up`` point), ``down`` (listed in
    another state: no ``up`` point) or ``gone`` (not in the controller's table). The
    points have the shapes the controller profiles write (agent/profiles/*.yaml).
    """
    ns = int(t * NS)
    tags = {"device": controller, "role": "controller"}
    out = [Point("device", tags, {"reachable": 1 if reachable else 0, "poll_ms": 40.0}, ns)]
    if not reachable:
        return out
    listed = {n: st for n, st in aps.items() if st != "gone"}
    for i, (name, st) in enumerate(sorted(listed.items())):
        ap_tags = {**tags, "ap": name, "ap_mac": f"00:11:22:33:44:{i:02x}"}
        if st == "up":
            out.append(Point("ap", ap_tags, {"up": 1}, ns + 1))
        out.append(Point("ap", ap_tags, {"status": st, "model": "AP-515"}, ns + 2))
        out.append(Point("ap", ap_tags, {"clients": clients if st == "up" else 0}, ns + 3))
    joined = sum(1 for st in listed.values() if st == "up")
    out.append(Point("ap", tags, {"aps_joined": joined}, ns + 4))
    return out


def now_s() -> float:
    """Wall-clock seconds."""
    return time.time()
