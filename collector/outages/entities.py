"""What can fail, and what depends on what: the entity tree of every site.

Derived from the inventory, never configured twice. Per site::

    agent                         the site box's MQTT connection (root)
    └── uplink                    internet reachability (all probe targets lost)
        ├── uplink_quality        loss / latency over threshold for a while
        ├── uplink_throughput     measured throughput below a share of the contract
        ├── uplink_saturation     utilization over threshold in lesson hours
        ├── aps                   the site's access points as a group (share down)
        └── device <name>         devices without ``parent:``; below them their
            └── device <child>    children by ``parent:``, and ...
                ├── interface     ... each port marked ``monitor: true``
                └── ap <name>     ... and below a WLAN controller, the APs it manages

An access point (``role: ap``) has two parents: its ``parent:`` device and the site's
``aps`` group, so a group outage covers the single APs instead of mailing each. An AP
behind a controller (kind ``ap``) is not in the inventory: it is learned from the
controller's points (:mod:`collector.outages.aps`) and added with :meth:`EntityTree.add_ap`;
its parents are the controller and the ``aps`` group. Keys are
``<tenant>/<site>/<kind>[/<name>]``; an interface's name is ``<device>/<ifname>``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from schoolnet.inventory import Inventory, Site

AGENT: Final = "agent"
UPLINK: Final = "uplink"
UPLINK_QUALITY: Final = "uplink_quality"
UPLINK_THROUGHPUT: Final = "uplink_throughput"
UPLINK_SATURATION: Final = "uplink_saturation"
APS: Final = "aps"
DEVICE: Final = "device"
INTERFACE: Final = "interface"
AP: Final = "ap"
#: Kinds that exist once per site (no name).
SITE_KINDS: Final = (AGENT, UPLINK, UPLINK_QUALITY, UPLINK_THROUGHPUT, UPLINK_SATURATION, APS)
KINDS: Final = (*SITE_KINDS, DEVICE, INTERFACE, AP)
#: Kinds counted as "devices behind" an outage (mail: "40 of 46 devices").
DEVICE_KINDS: Final = frozenset({DEVICE, AP})


def entity_key(tenant: str, site: str, kind: str, name: str = "") -> str:
    """The stable key of an entity (also its identity in the state database)."""
    base = f"{tenant}/{site}/{kind}"
    return f"{base}/{name}" if name else base


@dataclass(frozen=True, slots=True)
class Entity:
    """One thing that can have an outage."""

    key: str
    tenant: str
    site: str
    kind: str
    name: str = ""
    #: Keys of the entities this one depends on (the first is the tree parent).
    parents: tuple[str, ...] = ()
    depth: int = 0
    #: For devices: the inventory role (router, switch, ap, ...).
    role: str = ""


class EntityTree:
    """Every entity of every inventory site, with parents, children and lookups."""

    def __init__(self, inventory: Inventory) -> None:
        self.entities: dict[str, Entity] = {}
        self.children: dict[str, list[str]] = {}
        #: (tenant, site, device) -> monitored ifNames
        self.monitored: dict[tuple[str, str, str], frozenset[str]] = {}
        #: (tenant, site) -> keys of the site's AP devices
        self.aps: dict[tuple[str, str], tuple[str, ...]] = {}
        #: (tenant, site) -> every key of the site, parents before children
        self.by_site: dict[tuple[str, str], list[str]] = {}
        for site in inventory:
            self._add_site(site)
        for e in self.entities.values():
            for p in e.parents:
                self.children.setdefault(p, []).append(e.key)

    def __contains__(self, key: object) -> bool:
        return key in self.entities

    def __getitem__(self, key: str) -> Entity:
        return self.entities[key]

    def __iter__(self) -> Iterator[Entity]:
        return iter(self.entities.values())

    def _put(self, e: Entity) -> None:
        self.entities[e.key] = e
        self.by_site.setdefault((e.tenant, e.site), []).append(e.key)

    def _add_site(self, site: Site) -> None:
        t, s = site.tenant, site.id

        def key(kind: str, name: str = "") -> str:
            return entity_key(t, s, kind, name)

        self._put(Entity(key(AGENT), t, s, AGENT))
        self._put(Entity(key(UPLINK), t, s, UPLINK, parents=(key(AGENT),), depth=1))
        for kind in (UPLINK_QUALITY, UPLINK_THROUGHPUT, UPLINK_SATURATION):
            self._put(Entity(key(kind), t, s, kind, parents=(key(UPLINK),), depth=2))
        ap_names = [d.name for d in site.devices if d.role == "ap"]
        if ap_names:
            self._put(Entity(key(APS), t, s, APS, parents=(key(UPLINK),), depth=2))
        names = {d.name for d in site.devices}
        depth: dict[str, int] = {}

        def device_depth(name: str, seen: frozenset[str] = frozenset()) -> int:
            # A parent cycle in the inventory (a -> b -> a) must not hang the collector:
            # the device where the cycle closes hangs directly below the uplink.
            if name in depth:
                return depth[name]
            dev = site.device(name)
            parent = dev.parent if dev else None
            if parent is None or parent not in names or parent in seen or parent == name:
                d = 2
            else:
                d = device_depth(parent, seen | {name}) + 1
            if dev is not None and dev.role == "ap" and ap_names:
                d = max(d, 3)  # below the site's aps group (depth 2)
            depth[name] = d
            return d

        for dev in sorted(site.devices, key=lambda d: device_depth(d.name)):
            d = depth[dev.name]
            parent = dev.parent if dev.parent in names and dev.parent != dev.name else None
            if parent is not None and depth.get(parent, 99) >= d:
                parent = None  # the device where a parent cycle closes
            parents = [key(DEVICE, parent) if parent else key(UPLINK)]
            if dev.role == "ap":
                parents.append(key(APS))
            self._put(Entity(key(DEVICE, dev.name), t, s, DEVICE, dev.name,
                             parents=tuple(parents), depth=d, role=dev.role))
            ports = frozenset(i.name for i in dev.interfaces if i.monitor)
            if ports:
                self.monitored[(t, s, dev.name)] = ports
                for ifname in sorted(ports):
                    self._put(Entity(key(INTERFACE, f"{dev.name}/{ifname}"), t, s, INTERFACE,
                                     f"{dev.name}/{ifname}", parents=(key(DEVICE, dev.name),),
                                     depth=d + 1))
        self.aps[(t, s)] = tuple(key(DEVICE, n) for n in ap_names)

    def add_ap(self, tenant: str, site: str, controller: str, name: str) -> Entity:
        """Add (or re-parent) a learned AP below its controller and the site's ``aps`` group."""
        key = entity_key(tenant, site, AP, name)
        if key in self.entities:
            self.remove(key)
        group = entity_key(tenant, site, APS)
        if group not in self.entities:  # a site whose only APs are behind a controller
            self._link(Entity(group, tenant, site, APS,
                              parents=(entity_key(tenant, site, UPLINK),), depth=2))
        ctl = entity_key(tenant, site, DEVICE, controller)
        first = ctl if ctl in self.entities else entity_key(tenant, site, UPLINK)
        depth = max(self.entities[first].depth + 1, 3)  # below the aps group (depth 2)
        e = Entity(key, tenant, site, AP, name, parents=(first, group), depth=depth, role="ap")
        self._link(e)
        return e

    def _link(self, e: Entity) -> None:
        self._put(e)
        for p in e.parents:
            self.children.setdefault(p, []).append(e.key)

    def remove(self, key: str) -> None:
        """Take a leaf entity (a forgotten AP) out of the tree."""
        e = self.entities.pop(key, None)
        if e is None:
            return
        for p in e.parents:
            kids = self.children.get(p)
            if kids is not None and key in kids:
                kids.remove(key)
        keys = self.by_site.get((e.tenant, e.site))
        if keys is not None and key in keys:
            keys.remove(key)

    def ancestors(self, key: str, *, skip: str | None = None) -> list[str]:
        """Every entity ``key`` depends on, nearest first (``skip``: leave one out)."""
        out: list[str] = []
        seen: set[str] = set()
        frontier = list(self.entities[key].parents)
        while frontier:
            nxt: list[str] = []
            for p in frontier:
                if p in seen or p == skip:
                    continue
                seen.add(p)
                out.append(p)
                nxt.extend(self.entities[p].parents)
            frontier = nxt
        return out

    def descendants(self, key: str) -> list[str]:
        """Every entity that depends on ``key`` (directly or not), each once."""
        out: list[str] = []
        seen: set[str] = set()
        stack = list(self.children.get(key, ()))
        while stack:
            k = stack.pop()
            if k in seen:
                continue
            seen.add(k)
            out.append(k)
            stack.extend(self.children.get(k, ()))
        return out

    def site_of(self, key: str) -> tuple[str, str]:
        """(tenant, site) of an entity."""
        e = self.entities[key]
        return e.tenant, e.site
