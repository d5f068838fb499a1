"""The simulated city: a tenant with several schools, written as real site-config YAML.

:func:`default_city` describes Herne-like schools (a Gymnasium and a Gesamtschule on
fibre, a Grundschule on DSL), each with an uplink router, switches and WLAN gear;
:func:`write_city` gives every device its own loopback address and UDP port, writes
``site-configs/<tenant>/tenant.yaml`` and one ``<site>.yaml`` per school, and checks
the result with the same loader ``schoolnet config check`` uses. The demo and the
end-to-end test both build their inventory here, so they test what the demo shows.

Every device answers SNMPv2c with its recording name as community (that is how one
snmpsim selects what to serve); ``simulator`` says which snmpsim process serves it, so
a test can stop one device's simulator and keep the others.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from schoolnet.demo.recordings import (
    THIRD_PARTY,
    RouterInterface,
    recording_source,
    router_recording,
)
from schoolnet.inventory import Inventory, load_inventory
from schoolnet.sim.servers import free_port

UPLINK_INTERFACE = "WAN"
MAIN_SIMULATOR = "main"


@dataclass(frozen=True, kw_only=True)
class SimDevice:
    """A device of a simulated school and the recording that plays it."""

    name: str
    role: str
    vendor: str
    recording: str  # community: a key of THIRD_PARTY, or "router-<site>" (generated)
    parent: str | None = None
    simulator: str = MAIN_SIMULATOR


@dataclass(frozen=True, kw_only=True)
class SimSchool:
    """A simulated school site: contract, simulated traffic and devices."""

    id: str
    name: str
    uplink_kind: str  # fibre | dsl | ...
    down_mbit: float
    up_mbit: float
    traffic_in_mbit: float  # what the router's WAN interface receives (download)
    traffic_out_mbit: float
    devices: tuple[SimDevice, ...]

    @property
    def router_recording_name(self) -> str:
        """Community of this school's generated router recording."""
        return f"router-{self.id}"

    def router_interfaces(self) -> list[RouterInterface]:
        """The router's WAN (contracted speed) and LAN interfaces with their traffic."""
        dsl = self.uplink_kind == "dsl"
        return [
            RouterInterface(index=1, name=UPLINK_INTERFACE, alias=f"{self.uplink_kind} uplink",
                            speed_mbit=int(self.down_mbit), in_mbit=self.traffic_in_mbit,
                            out_mbit=self.traffic_out_mbit, if_type=251 if dsl else 6),
            # The LAN side carries the same traffic the other way round.
            RouterInterface(index=2, name="LAN", alias="school network", speed_mbit=1000,
                            in_mbit=self.traffic_out_mbit, out_mbit=self.traffic_in_mbit),
        ]


@dataclass(frozen=True, kw_only=True)
class SimCity:
    """A tenant (school authority) and its simulated schools."""

    tenant: str
    tenant_name: str
    schools: tuple[SimSchool, ...]

    def school(self, site: str) -> SimSchool:
        """The school with id ``site``."""
        for s in self.schools:
            if s.id == site:
                return s
        raise KeyError(site)


def _router(site_id: str) -> SimDevice:
    return SimDevice(name="router", role="router", vendor="generic", recording=f"router-{site_id}")


def default_city() -> SimCity:
    """Stadt Herne with three schools (sizes and uplinks as in docs CONTEXT figures)."""
    gy = "gy-pestalozzi"
    ge = "ge-erich-fried"
    gs = "gs-sodingen"
    return SimCity(tenant="herne", tenant_name="Stadt Herne", schools=(
        SimSchool(id=gy, name="Pestalozzi-Gymnasium", uplink_kind="fibre",
                  down_mbit=400, up_mbit=400, traffic_in_mbit=240, traffic_out_mbit=85,
                  devices=(
                      _router(gy),
                      SimDevice(name="core-sw", role="switch", vendor="cisco",
                                recording="cisco-c3560", parent="router"),
                      SimDevice(name="sw-building-b", role="switch", vendor="cisco",
                                recording="cisco-c3750", parent="core-sw"),
                      SimDevice(name="wlc", role="controller", vendor="cisco",
                                recording="cisco-controller", parent="core-sw"),
                  )),
        SimSchool(id=ge, name="Erich-Fried-Gesamtschule", uplink_kind="fibre",
                  down_mbit=1000, up_mbit=1000, traffic_in_mbit=290, traffic_out_mbit=120,
                  devices=(
                      _router(ge),
                      SimDevice(name="fw", role="firewall", vendor="vyatta",
                                recording="vyatta", parent="router"),
                      SimDevice(name="core-sw", role="switch", vendor="hpe",
                                recording="hpe-procurve", parent="fw"),
                      SimDevice(name="sw-annex", role="switch", vendor="cisco",
                                recording="cisco-c3750", parent="core-sw"),
                      SimDevice(name="wlc", role="controller", vendor="aruba",
                                recording="aruba-7010", parent="core-sw"),
                  )),
        SimSchool(id=gs, name="Grundschule Sodingen", uplink_kind="dsl",
                  down_mbit=100, up_mbit=40, traffic_in_mbit=62, traffic_out_mbit=18,
                  devices=(
                      _router(gs),
                      SimDevice(name="sw", role="switch", vendor="cisco",
                                recording="cisco-c3750", parent="router"),
                      SimDevice(name="ap-aula", role="ap", vendor="ubiquiti",
                                recording="ubiquiti-m5", parent="sw"),
                      SimDevice(name="ap-flur", role="ap", vendor="ubiquiti",
                                recording="ubiquiti-m5", parent="sw"),
                  )),
    ))


def on_simulator(city: SimCity, site: str, device: str, simulator: str) -> SimCity:
    """The same city with one device served by its own snmpsim process ``simulator``.

    Stopping that process (by PID) makes exactly this device stop answering.
    """
    schools = []
    for s in city.schools:
        devices = tuple(
            dataclasses.replace(d, simulator=simulator)
            if s.id == site and d.name == device else d
            for d in s.devices)
        schools.append(dataclasses.replace(s, devices=devices))
    if schools == list(city.schools):
        raise KeyError(f"{site}/{device}")
    return dataclasses.replace(city, schools=tuple(schools))


def default_address_allocator() -> Callable[[], str]:
    """Unique loopback addresses for this process: ``127.<200 + pid % 50>.<n>.<m>``.

    The second octet keeps concurrent demos (and the tests' 127.100-199 range) apart;
    ports are picked free per address anyway.
    """
    second = 200 + os.getpid() % 50
    counter = iter(range(1, 250 * 250))

    def next_address() -> str:
        n = next(counter)
        return f"127.{second}.{n // 250}.{n % 250 + 1}"

    return next_address


@dataclass(frozen=True)
class Endpoint:
    """Where one simulated device answers SNMP."""

    site: str
    device: str
    host: str
    port: int
    simulator: str


@dataclass
class WrittenCity:
    """What :func:`write_city` produced: files, the loaded inventory and SNMP endpoints."""

    city: SimCity
    config_dir: Path  # the site-configs directory (contains <tenant>/)
    inventory: Inventory
    endpoints: list[Endpoint] = field(default_factory=list)

    @property
    def tenant_dir(self) -> Path:
        """site-configs/<tenant>."""
        return self.config_dir / self.city.tenant

    def site_file(self, site: str) -> Path:
        """The YAML file of one school."""
        return self.tenant_dir / f"{site}.yaml"

    def simulators(self) -> Iterator[str]:
        """Names of the snmpsim processes this city needs, the main one first."""
        seen: list[str] = []
        for ep in self.endpoints:
            if ep.simulator not in seen:
                seen.append(ep.simulator)
        return iter(sorted(seen, key=lambda s: (s != MAIN_SIMULATOR, s)))

    def recordings(self, simulator: str) -> dict[str, Path | str]:
        """Community -> recording source for the devices one simulator serves."""
        wanted = {
            d.recording
            for s in self.city.schools for d in s.devices
            for ep in self.endpoints
            if ep.site == s.id and ep.device == d.name and ep.simulator == simulator
        }
        out: dict[str, Path | str] = {}
        for school in self.city.schools:
            if school.router_recording_name in wanted:
                out[school.router_recording_name] = router_recording(
                    sys_name=f"{school.id}-router", location=school.name,
                    contact=f"Schul-IT {self.city.tenant_name}",
                    interfaces=school.router_interfaces(),
                    # Different uptimes per school; sysUpTime then advances at 100/s.
                    uptime_ticks=8_640_000 * (3 + len(school.id)),
                )
        for name in sorted(wanted - set(out)):
            out[name] = recording_source(THIRD_PARTY[name])
        return out

    def listen(self, simulator: str) -> list[tuple[str, int]]:
        """The (address, port) pairs one simulator listens on."""
        return [(ep.host, ep.port) for ep in self.endpoints if ep.simulator == simulator]


def _site_doc(city: SimCity, school: SimSchool, hosts: dict[str, tuple[str, int]],
              spool_root: Path) -> dict[str, Any]:
    devices = []
    for d in school.devices:
        host, port = hosts[d.name]
        doc: dict[str, Any] = {"name": d.name, "host": host, "port": port, "role": d.role,
                               "vendor": d.vendor}
        if d.parent:
            doc["parent"] = d.parent
        # snmpsim picks the recording by community; inline is fine for a simulation.
        doc["snmp"] = {"version": "2c", "community": d.recording}
        if d.role == "router":
            doc["interfaces"] = {UPLINK_INTERFACE: {"monitor": True}}
        devices.append(doc)
    return {
        "site": school.id,
        "name": school.name,
        "uplink": {"kind": school.uplink_kind, "down_mbit": school.down_mbit,
                   "up_mbit": school.up_mbit, "device": "router",
                   "interface": UPLINK_INTERFACE},
        "agent": {"spool_dir": str(spool_root / school.id)},
        "devices": devices,
    }


def write_city(city: SimCity, config_dir: Path, *, broker: tuple[str, int],
               poll_interval_s: float = 10.0, spool_root: Path | None = None,
               next_address: Callable[[], str] | None = None) -> WrittenCity:
    """Write the city as site-config YAML below ``config_dir`` and load it back.

    Each device gets its own loopback address (from ``next_address``) and a UDP port
    that is free there. Raises :class:`schoolnet.configfile.ConfigError` if the files
    would not pass ``schoolnet config check`` (a bug here, never the user's).
    """
    next_address = next_address or default_address_allocator()
    spool_root = spool_root or config_dir.parent / "spool"
    tdir = config_dir / city.tenant
    tdir.mkdir(parents=True, exist_ok=True)
    tenant_doc = {
        "tenant": city.tenant,
        "name": city.tenant_name,
        "defaults": {"agent": {"poll_interval_s": poll_interval_s,
                               "broker": {"host": broker[0], "port": broker[1]}}},
    }
    _dump(tdir / "tenant.yaml", tenant_doc,
          f"{city.tenant_name}: the school authority of the simulated demo city.")
    endpoints: list[Endpoint] = []
    for school in city.schools:
        hosts: dict[str, tuple[str, int]] = {}
        for d in school.devices:
            host = next_address()
            port = free_port(host, socket.SOCK_DGRAM)
            hosts[d.name] = (host, port)
            endpoints.append(Endpoint(school.id, d.name, host, port, d.simulator))
        _dump(tdir / f"{school.id}.yaml", _site_doc(city, school, hosts, spool_root),
              f"{school.name}: {school.uplink_kind} {school.down_mbit:g}/"
              f"{school.up_mbit:g} Mbit/s (simulated by schoolnet demo).")
    inventory = load_inventory(config_dir)
    return WrittenCity(city=city, config_dir=config_dir, inventory=inventory,
                       endpoints=endpoints)


def _dump(path: Path, doc: dict[str, Any], comment: str) -> None:
    text = yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, allow_unicode=True)
    path.write_text(f"# {comment}\n{text}", encoding="utf-8")
