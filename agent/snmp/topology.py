"""A site's neighbour graph from its ``lldp`` points: a tree and suggested ``parent:`` entries.

Pure (no I/O): the input is what the ``lldp`` profile writes (docs/data-model.md) —
from the database or from one poll — plus the site's inventory devices.

- An **observation** is one LLDP neighbour: device ``device`` sees, on its local port
  ``ifname``, the remote system ``remote_name`` on the remote's port ``remote_port``
  (and, from the address table, its management addresses).
- A remote system **is** an inventory device when its name equals the device's name or
  host (case-insensitive, DNS domain stripped), or one of its management addresses is
  the device's host. Remotes matching nothing are *unknown*: listed, never suggested.
- The **roots** are the uplink's device, else the devices without ``parent:`` in
  inventory order (a parentless device already reached from an earlier root is not a
  root). Distances are hops over links seen from either end.
- Each other reachable device's **suggested parent** is a neighbour one hop closer to a
  root; ties prefer a neighbour that itself sees the device (its own port is then
  known first-hand), then the name. The evidence is the parent's port (and the
  device's own port where known).
- The **links** (:func:`links`) are what the agent writes as ``topology`` points
  (agent/topology_source.py): each link once, oriented away from the root.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from schoolnet.inventory import Device
from schoolnet.wire import Point


@dataclass(frozen=True)
class Observation:
    """One LLDP neighbour as ``device`` reports it."""

    device: str
    local_port: str
    remote_name: str
    remote_port: str
    mgmt_addresses: tuple[str, ...] = ()


@dataclass(frozen=True)
class Edge:
    """A link between two inventory devices, as one side saw it."""

    seer: str
    seer_port: str
    seen: str
    seen_port: str


@dataclass(frozen=True)
class Suggestion:
    """A proposed ``parent:`` for ``device`` with the evidence."""

    device: str
    parent: str
    parent_port: str
    device_port: str
    current: str | None  # the inventory's parent now

    @property
    def evidence(self) -> str:
        where = f"seen on {self.parent} {self.parent_port or '(port unknown)'}"
        return where + (f" (its {self.device_port})" if self.device_port else "")


@dataclass
class Topology:
    """The graph of one site and what follows from it."""

    devices: tuple[str, ...]
    roots: tuple[str, ...]
    edges: tuple[Edge, ...]
    unknown: tuple[Observation, ...]
    distance: dict[str, int] = field(default_factory=dict)
    suggestions: dict[str, Suggestion] = field(default_factory=dict)

    @property
    def unseen(self) -> tuple[str, ...]:
        """Inventory devices no LLDP link touches."""
        linked = {e.seer for e in self.edges} | {e.seen for e in self.edges}
        return tuple(d for d in self.devices if d not in linked)


def short_name(name: str) -> str:
    """``Core-SW.school.example`` → ``core-sw``; an IP address stays whole."""
    n = name.strip().lower().rstrip(".")
    try:
        ipaddress.ip_address(n)
        return n
    except ValueError:
        return n.split(".", 1)[0]


def observations_from_rows(rows: Iterable[tuple[Mapping[str, str], Mapping[str, Any]]]
                           ) -> list[Observation]:
    """Observations from (tags, fields) of ``lldp`` points; neighbour and address points
    of one neighbour (same device, port and remote) are merged."""
    merged: dict[tuple[str, str, str], tuple[str, set[str]]] = {}
    for tags, fields in rows:
        device, remote = tags.get("device", ""), tags.get("remote_name", "")
        if not device or not remote:
            continue
        key = (device, tags.get("ifname", ""), remote)
        port, addrs = merged.get(key, ("", set()))
        port = port or tags.get("remote_port", "")
        addr = fields.get("mgmt_address")
        if isinstance(addr, str) and addr:
            addrs.add(addr)
        merged[key] = (port, addrs)
    return [Observation(device=d, local_port=p, remote_name=r, remote_port=rp,
                        mgmt_addresses=tuple(sorted(a)))
            for (d, p, r), (rp, a) in sorted(merged.items())]


def observations_from_points(points: Iterable[Point]) -> list[Observation]:
    """Observations from the ``lldp`` points of a poll (other measurements ignored)."""
    return observations_from_rows((p.tags, p.fields) for p in points
                                  if p.measurement == "lldp")


def match_device(obs: Observation, devices: Sequence[Device]) -> str | None:
    """The inventory device ``obs`` sees, or None: by name/host, then management address."""
    want = short_name(obs.remote_name)
    for d in devices:
        if want in (short_name(d.name), short_name(d.host)):
            return d.name
    addrs = {a.lower() for a in obs.mgmt_addresses}
    for d in devices:
        if d.host.lower() in addrs:
            return d.name
    return None


def build(observations: Iterable[Observation], devices: Sequence[Device],
          uplink_device: str | None = None) -> Topology:
    """The site's graph, roots, distances and suggested parents."""
    names = tuple(d.name for d in devices)
    edges: set[Edge] = set()
    unknown: list[Observation] = []
    for obs in observations:
        if obs.device not in names:
            continue
        seen = match_device(obs, devices)
        if seen is None:
            unknown.append(obs)
        elif seen != obs.device:
            edges.add(Edge(obs.device, obs.local_port, seen, obs.remote_port))
    adj: dict[str, set[str]] = {n: set() for n in names}
    for e in edges:
        adj[e.seer].add(e.seen)
        adj[e.seen].add(e.seer)

    if uplink_device in names:
        candidates: list[str] = [uplink_device]  # type: ignore[list-item]
    else:
        candidates = [d.name for d in devices if d.parent is None]
    distance: dict[str, int] = {}
    roots: list[str] = []
    for root in candidates:
        if root in distance:
            continue
        roots.append(root)
        distance[root] = 0
        queue = deque([root])
        while queue:
            here = queue.popleft()
            for nxt in sorted(adj[here]):
                if nxt not in distance:
                    distance[nxt] = distance[here] + 1
                    queue.append(nxt)

    current = {d.name: d.parent for d in devices}
    suggestions: dict[str, Suggestion] = {}
    for name in names:
        dist = distance.get(name)
        if not dist:  # a root, or unreachable from every root
            continue
        options = []
        for nb in adj[name]:
            if distance.get(nb) != dist - 1:
                continue
            direct = sorted((e.seer_port, e.seen_port) for e in edges
                            if e.seer == nb and e.seen == name)
            reverse = sorted((e.seen_port, e.seer_port) for e in edges
                             if e.seer == name and e.seen == nb)
            parent_port, device_port = (direct or reverse)[0]
            options.append((0 if direct else 1, nb, parent_port, device_port))
        _, parent, parent_port, device_port = min(options)
        suggestions[name] = Suggestion(name, parent, parent_port, device_port,
                                       current.get(name))
    return Topology(devices=names, roots=tuple(roots), edges=tuple(sorted(
        edges, key=lambda e: (e.seer, e.seer_port, e.seen, e.seen_port))),
        unknown=tuple(unknown), distance=distance, suggestions=suggestions)


@dataclass(frozen=True)
class Link:
    """One link of the graph, oriented away from the root: ``device`` (an inventory
    device) on its port ``port`` reaches ``neighbour`` on ``neighbour_port``.

    ``known``: the neighbour is an inventory device (else its LLDP name). ``depth``: the
    neighbour's hops from the root (None when no root reaches it). ``parent_link``: this
    is the link of the neighbour's suggested parent. Empty ports are unknown ones.
    """

    device: str
    port: str
    neighbour: str
    neighbour_port: str
    known: bool
    depth: int | None
    parent_link: bool


def links(topo: Topology) -> list[Link]:
    """Every link once: inventory pairs oriented from the end nearer a root (then by
    name), as that end reports them (else as the far end does); then unknown remotes."""
    far = len(topo.devices) + 1  # further than any reachable device

    def rank(name: str) -> tuple[int, str]:
        return topo.distance.get(name, far), name

    reports: dict[tuple[str, str], list[tuple[str, str]]] = {}
    reverse: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for e in topo.edges:
        if rank(e.seer) < rank(e.seen):
            reports.setdefault((e.seer, e.seen), []).append((e.seer_port, e.seen_port))
        else:
            reverse.setdefault((e.seen, e.seer), []).append((e.seen_port, e.seer_port))
    out: list[Link] = []
    for pair in sorted(reports.keys() | reverse.keys()):
        up, down = pair
        s = topo.suggestions.get(down)
        for port, nport in sorted(set(reports.get(pair) or reverse[pair])):
            is_parent = s is not None and s.parent == up and s.parent_port == port
            out.append(Link(up, port, down, nport, True, topo.distance.get(down), is_parent))
    for obs in topo.unknown:
        at = topo.distance.get(obs.device)
        out.append(Link(obs.device, obs.local_port, obs.remote_name, obs.remote_port, False,
                        None if at is None else at + 1, False))
    return out


def render_tree(topo: Topology) -> str:
    """The tree from the roots: each child with the parent's port, then unknown
    neighbours (under the device that sees them) and devices LLDP does not show."""
    children: dict[str, list[Suggestion]] = {}
    for s in topo.suggestions.values():
        children.setdefault(s.parent, []).append(s)
    strangers: dict[str, list[Observation]] = {}
    for obs in topo.unknown:
        strangers.setdefault(obs.device, []).append(obs)
    lines: list[str] = []

    def walk(name: str, prefix: str) -> None:
        kids: list[tuple[str, str, str | None]] = []
        for s in sorted(children.get(name, []), key=lambda s: (s.parent_port, s.device)):
            port = f" ({s.device_port})" if s.device_port else ""
            kids.append((f"{s.parent_port or '?'} → {s.device}{port}", s.device, None))
        for o in strangers.get(name, []):
            port = f" ({o.remote_port})" if o.remote_port else ""
            addr = f" {', '.join(o.mgmt_addresses)}" if o.mgmt_addresses else ""
            kids.append((f"{o.local_port or '?'} → {o.remote_name}{port}{addr} "
                         "[not in inventory]", "", None))
        for i, (label, child, _) in enumerate(kids):
            last = i == len(kids) - 1
            lines.append(f"{prefix}{'└── ' if last else '├── '}{label}")
            if child:
                walk(child, prefix + ("    " if last else "│   "))

    for root in topo.roots:
        lines.append(root)
        walk(root, "")
    others = [d for d in topo.devices if d not in topo.distance]
    for name in others:  # linked among themselves, not to a root
        if name in topo.unseen:
            continue
        lines.append(f"{name}  [not connected to {', '.join(topo.roots) or 'a root'}]")
        walk(name, "")
    if topo.unseen:
        lines.append("")
        lines.append("not seen via LLDP: " + ", ".join(topo.unseen))
    return "\n".join(lines)


def render_suggestions(topo: Topology) -> str:
    """``parent:`` entries to paste under ``devices:`` (already-set ones as comments)."""
    lines: list[str] = []
    for name in topo.devices:
        s = topo.suggestions.get(name)
        if s is None:
            continue
        if s.current == s.parent:
            lines.append(f"# {name}: parent {s.parent} already set ({s.evidence})")
            continue
        lines.append(f"- name: {name}")
        note = f", now {s.current}" if s.current else ""
        lines.append(f"  parent: {s.parent}  # {s.evidence}{note}")
    for obs in topo.unknown:
        lines.append(f"# not in the inventory: {obs.remote_name} on {obs.device} "
                     f"{obs.local_port or '(port unknown)'}")
    unseen = [d for d in topo.devices if d not in topo.suggestions and d not in topo.roots]
    if unseen:
        lines.append("# no suggestion (not linked to a root via LLDP): " + ", ".join(unseen))
    return "\n".join(lines)
