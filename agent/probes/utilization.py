"""Passive uplink utilization (``uplink``) from the SNMP counters of the WAN port.

The least-coupled way: the SNMP poller stays as it is. :class:`UplinkUtilization`
wraps the source that polls ``uplink.device`` (a decorator over the ``Source``
protocol): it passes every point through and, when the poll carried rates for the
interface named ``uplink.interface``, adds one ``uplink`` point with the rates against
the contract. No extra SNMP request, no second rate computation, and the timestamp is
the one the counters were read at.

Directions are the router's: ``in`` on the WAN port is what arrives from the provider
(download, against ``down_mbit``), ``out`` what leaves (upload, against ``up_mbit``).
"""

from __future__ import annotations

from collections.abc import Iterable

from agent.source import Source, SourceWrapper
from schoolnet.inventory import Uplink
from schoolnet.wire import FieldValue, Point


def uplink_point(points: Iterable[Point], uplink: Uplink) -> Point | None:
    """The ``uplink`` point for one poll of the uplink device (pure), or None.

    None when the WAN interface is not among the points or has no rates in this poll
    (first poll, counter reset: the poller leaves rates out rather than guessing).
    """
    for p in points:
        if p.measurement != "interface" or p.tags.get("device") != uplink.device:
            continue
        if uplink.interface not in (p.tags.get("ifname"), p.fields.get("alias")):
            continue
        in_bps, out_bps = p.fields.get("in_bps"), p.fields.get("out_bps")
        fields: dict[str, FieldValue] = {"contract_down_mbps": float(uplink.down_mbit),
                                         "contract_up_mbps": float(uplink.up_mbit)}
        if isinstance(in_bps, int | float) and not isinstance(in_bps, bool):
            fields["in_mbps"] = in_bps / 1e6
            fields["util_in_pct"] = 100.0 * in_bps / (uplink.down_mbit * 1e6)
        if isinstance(out_bps, int | float) and not isinstance(out_bps, bool):
            fields["out_mbps"] = out_bps / 1e6
            fields["util_out_pct"] = 100.0 * out_bps / (uplink.up_mbit * 1e6)
        if "util_in_pct" not in fields and "util_out_pct" not in fields:
            return None
        tags = {"device": uplink.device, "ifname": str(p.tags.get("ifname", uplink.interface)),
                "kind": uplink.kind}
        return Point("uplink", tags, fields, p.time_ns)
    return None


class UplinkUtilization(SourceWrapper):
    """Wraps the SNMP source of the uplink device; adds the ``uplink`` point to its polls."""

    def __init__(self, inner: Source, uplink: Uplink) -> None:
        super().__init__(inner)
        self.uplink = uplink

    async def collect(self, now_ns: int) -> list[Point]:
        """The device's poll, plus the ``uplink`` point when the WAN port had rates."""
        points = list(await self.inner.collect(now_ns))
        extra = uplink_point(points, self.uplink)
        return [*points, extra] if extra is not None else points

