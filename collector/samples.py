"""Synthetic but realistic payloads: one poll of a switch, as the agent publishes it.

Used by the collector's benchmarks, its CPU-budget measurement and its tests, so that
all of them talk about the same "48-port device message": one ``device`` point plus
one ``interface`` point per port, with the counters, rates and status fields the
SNMP poller emits (see docs/data-model.md).
"""

from __future__ import annotations

import time

from schoolnet.wire import BATCH_VERSION, Batch, Point, encode_batch


def switch_points(
    device: str = "core-sw",
    *,
    ports: int = 48,
    time_ns: int | None = None,
    role: str = "switch",
    vendor: str = "cisco",
    salt: int = 0,
) -> list[Point]:
    """The points of one poll of a switch with ``ports`` interfaces.

    ``salt`` varies the counter values so that successive polls differ.
    """
    now = time.time_ns() if time_ns is None else time_ns
    dev_tags = {"device": device, "role": role, "vendor": vendor}
    points = [
        Point("device", dev_tags,
              {"reachable": True, "uptime_s": 864000 + salt, "poll_ms": 41.5}, now)
    ]
    for i in range(1, ports + 1):
        tags = {**dev_tags, "ifindex": str(10100 + i), "ifname": f"Gi0/{i}"}
        fields: dict[str, int | float | bool | str] = {
            "in_octets": 123456789012 + i * 1000 + salt,
            "out_octets": 98765432101 + i * 1000 + salt,
            # Rates as the agent rounds them (agent/snmp/rates.py: 3 decimals).
            "in_bps": round(1234567.891 + i * 1.017 + salt * 0.013, 3),
            "out_bps": round(7654321.237 + i * 3.141 + salt * 0.007, 3),
            "in_errors": 0,
            "out_errors": i % 3,
            "in_discards": 2,
            "out_discards": 0,
            "in_ucast_pkts": 1234567 + salt,
            "out_ucast_pkts": 7654321 + salt,
            "admin_status": 1,
            "oper_status": 1 if i % 5 else 2,
            "speed_mbit": 1000,
            "alias": f"Room {i}",
        }
        points.append(Point("interface", tags, fields, now))
    return points


def switch_payload(site: str, seq: int, *, epoch: str = "e1", v: int = BATCH_VERSION,
                   **kwargs: object) -> bytes:
    """An encoded ``metrics`` payload with one switch poll (see :func:`switch_points`),
    in the form the agent sends (``v=1``: the old one-object-per-point form)."""
    points = switch_points(**kwargs)  # type: ignore[arg-type]
    return encode_batch(Batch(site=site, seq=seq, points=tuple(points), epoch=epoch, v=v))
