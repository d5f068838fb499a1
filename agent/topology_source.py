"""The site's LLDP graph as ``topology`` points: a source derived from the SNMP polls.

The agent already polls every device's ``lldp`` table (the ``lldp`` profile, or
``profile: auto``). Nothing here asks a device anything:

* :class:`NeighbourTap` wraps the SNMP source of each device that may poll LLDP (a
  decorator over the ``Source`` protocol, like the uplink utilization wrapper): every
  poll passes through unchanged, and its ``lldp`` rows are kept in a
  :class:`NeighbourStore`, the latest per device;
* :class:`TopologySource` (``topology``) is an ordinary source on the agent's schedule:
  it builds the graph from the store with the pure :mod:`agent.snmp.topology` (the
  same code as ``schoolnet topology``) and returns one point per link. The runtime
  (agent/running.py) times, validates and routes them like any other points.

Writing: when the set of links (or a link's fields) changed since the last write, and
otherwise every ``refresh_s`` (15 min), so a dashboard over any time range finds the
current links. A link that disappeared gets one last point with ``present`` 0. Series
are bounded by the links, which the ``lldp`` profile's ``max_rows`` bounds per device.

A device whose poll did not read its neighbour table (unreachable, table failed, poll
ended before it) keeps its previous neighbours for ``max_age_s`` (1 h), so one lost
poll does not cut the tree; after that they are dropped. Nothing is written before
every tapped device has been polled once: a graph from half the site would be written
as "changed" twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from agent.snmp.detect import uses_auto
from agent.snmp.topology import Link, build, links, observations_from_rows
from agent.source import Source, SourceWrapper
from schoolnet.inventory import Device, Site
from schoolnet.wire import FieldValue, Point

NS = 1_000_000_000
#: Unchanged links are written again this often (dashboards look back 6 h by default).
DEFAULT_REFRESH_S = 900.0
#: Neighbours of a device that stopped answering are forgotten after this long.
DEFAULT_MAX_AGE_S = 3600.0
#: The profile table whose success means "this poll read the device's neighbours".
NEIGHBOUR_TABLE = "lldp_neighbours"

Row = tuple[Mapping[str, str], Mapping[str, FieldValue]]


def read_neighbours(points: Sequence[Point]) -> bool:
    """Whether a poll's points say the neighbour table was read.

    The device answered, no ``snmp_error`` names the table (a ``row_limit`` cut still
    read it), and there are ``lldp`` rows — or, without rows, the poll had no error at
    all: a poll that stopped at an earlier table (the first unanswered request ends it)
    leaves no trace of the neighbour table, and must not read as "no neighbours".
    """
    answered = any(p.measurement == "device" and p.fields.get("reachable") == 1
                   for p in points)
    errors = [p for p in points if p.measurement == "snmp_error"
              and p.tags.get("error") != "row_limit"]
    if not answered or any(p.tags.get("table") == NEIGHBOUR_TABLE for p in errors):
        return False
    return not errors or any(p.measurement == "lldp" for p in points)


class NeighbourStore:
    """The latest ``lldp`` rows of each device of a site, as its SNMP polls left them."""

    def __init__(self, devices: Iterable[str], *, max_age_s: float = DEFAULT_MAX_AGE_S) -> None:
        self.max_age_ns = round(max_age_s * NS)
        self._latest: dict[str, tuple[int, list[Row]]] = {}
        self._unpolled = set(devices)

    def record(self, device: str, points: Sequence[Point], now_ns: int) -> None:
        """One poll of ``device`` at ``now_ns``: its rows replace the previous ones if
        the poll read the neighbour table; otherwise the previous ones stay."""
        self._unpolled.discard(device)
        if read_neighbours(points):
            self._latest[device] = (now_ns, [(p.tags, p.fields) for p in points
                                             if p.measurement == "lldp"])

    @property
    def ready(self) -> bool:
        """Every device has been polled at least once (answered or not)."""
        return not self._unpolled

    def rows(self, now_ns: int) -> list[Row]:
        """The rows of every device whose neighbours were read within ``max_age_s``."""
        return [row for at, rows in self._latest.values()
                if now_ns - at <= self.max_age_ns for row in rows]


class NeighbourTap(SourceWrapper):
    """Wraps one device's SNMP source: its polls pass through and go to the store."""

    def __init__(self, inner: Source, device: str, store: NeighbourStore) -> None:
        super().__init__(inner)
        self.device_name = device
        self.store = store

    async def collect(self, now_ns: int) -> list[Point]:
        """The device's poll, unchanged; recorded even when it fails (as not read)."""
        points: list[Point] = []
        try:
            points = list(await self.inner.collect(now_ns))
            return points
        finally:
            # A failed or cancelled gather still counts as "polled once" for readiness.
            self.store.record(self.device_name, points, now_ns)


LinkKey = tuple[str, str, str, str]


def link_point(link: Link, device: Device, now_ns: int, *, present: bool = True) -> Point:
    """The ``topology`` point of one link (docs/data-model.md); empty ports are left
    out (tag values are never empty), as is ``depth`` when no root reaches it."""
    tags = {"device": link.device, "role": device.role, "neighbour": link.neighbour}
    if device.vendor:
        tags["vendor"] = device.vendor
    if link.port:
        tags["ifname"] = link.port
    if link.neighbour_port:
        tags["neighbour_port"] = link.neighbour_port
    fields: dict[str, FieldValue] = {"present": int(present), "known": int(link.known),
                                     "parent_link": int(link.parent_link)}
    if link.depth is not None:
        fields["depth"] = link.depth
    return Point("topology", tags, fields, now_ns)


class TopologySource:
    """``topology``: the site's links from the tapped polls, on change and every
    ``refresh_s``; ``derived``: in ``--once`` runs it gathers after the polls."""

    derived = True

    def __init__(self, site: Site, store: NeighbourStore, *,
                 refresh_s: float = DEFAULT_REFRESH_S) -> None:
        self.name = "topology"
        self.site = site
        self.store = store
        self.refresh_ns = round(refresh_s * NS)
        self._devices = {d.name: d for d in site.devices}
        self._written: dict[LinkKey, Link] = {}
        self._written_ns: int | None = None

    def current(self, now_ns: int) -> dict[LinkKey, Link]:
        """The links of the graph the store holds now, by series key."""
        topo = build(observations_from_rows(self.store.rows(now_ns)), self.site.devices,
                     self.site.uplink.device if self.site.uplink else None)
        return {(x.device, x.port, x.neighbour, x.neighbour_port): x for x in links(topo)}

    async def collect(self, now_ns: int) -> list[Point]:
        """The link points when due (see the module doc), else none."""
        if not self.store.ready:
            return []
        now = self.current(now_ns)
        due = self._written_ns is None or now_ns - self._written_ns >= self.refresh_ns
        if now == self._written and not due:
            return []
        points = [link_point(x, self._devices[x.device], now_ns) for x in now.values()]
        points += [link_point(x, self._devices[x.device], now_ns, present=False)
                   for key, x in self._written.items() if key not in now]
        self._written, self._written_ns = now, now_ns
        return points


def may_poll_lldp(device: Device) -> bool:
    """Whether a device's profiles include ``lldp`` or detection may add it."""
    return "lldp" in device.profiles or uses_auto(device.profiles)


def with_topology(site: Site, sources: Sequence[Source], *,
                  refresh_s: float = DEFAULT_REFRESH_S,
                  max_age_s: float = DEFAULT_MAX_AGE_S) -> list[Source]:
    """``sources`` with the SNMP source (``snmp:<device>``) of every device that may poll
    LLDP tapped, plus the ``topology`` source; unchanged when no device may."""
    tapped = {f"snmp:{d.name}": d.name for d in site.devices if may_poll_lldp(d)}
    present = [s for s in sources if s.name in tapped]
    if not present:
        return list(sources)
    store = NeighbourStore((tapped[s.name] for s in present), max_age_s=max_age_s)
    out: list[Source] = [NeighbourTap(s, tapped[s.name], store) if s.name in tapped else s
                         for s in sources]
    out.append(TopologySource(site, store, refresh_s=refresh_s))
    return out
