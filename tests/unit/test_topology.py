"""agent.snmp.topology (the neighbour graph, tree, suggested parents and links; pure) and
agent.topology_source (the links as ``topology`` points, derived from the SNMP polls)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from agent.snmp.topology import (
    Link,
    Observation,
    build,
    links,
    observations_from_points,
    render_suggestions,
    render_tree,
    short_name,
)
from agent.topology_source import NeighbourStore, NeighbourTap, may_poll_lldp, with_topology
from schoolnet.configfile import Secret
from schoolnet.inventory import AgentSettings, Device, Site, SnmpCredentials, Uplink
from schoolnet.wire import DEFAULT_LIMITS, Point, check_point

NS = 1_000_000_000

CREDS = SnmpCredentials(version="2c", community=Secret("x"))


def dev(name: str, host: str = "", parent: str | None = None, role: str = "switch",
        vendor: str = "") -> Device:
    return Device(name=name, host=host or f"{name}.school.example", role=role, parent=parent,
                  vendor=vendor, snmp=CREDS)


def obs(device: str, port: str, remote: str, rport: str = "", *addrs: str) -> Observation:
    return Observation(device, port, remote, rport, tuple(addrs))


INV = [dev("router", "10.0.0.1", role="router"), dev("core-sw", "10.0.0.2"),
       dev("access-sw", "10.0.0.3"), dev("ap-101", "10.0.0.11", role="ap"),
       dev("printer-sw", "10.0.0.9")]

CASES = {
    # name: (observations, uplink device, expected {device: (parent, parent_port)},
    #        expected unknown remote names)
    "chain, names with domain and case": (
        [obs("router", "ether2", "Core-SW.school.example", "Gi0/1"),
         obs("core-sw", "Gi0/5", "ACCESS-SW", "1"),
         obs("access-sw", "7", "ap-101.school.example", "eth0")],
        "router",
        {"core-sw": ("router", "ether2"), "access-sw": ("core-sw", "Gi0/5"),
         "ap-101": ("access-sw", "7")}, []),
    "loop: two switches see each other, parent is the one closer to the root": (
        [obs("router", "ether2", "core-sw", "Gi0/1"),
         obs("core-sw", "Gi0/1", "router", "ether2"),
         obs("core-sw", "Gi0/5", "access-sw", "1"),
         obs("access-sw", "1", "core-sw", "Gi0/5")],
        "router",
        {"core-sw": ("router", "ether2"), "access-sw": ("core-sw", "Gi0/5")}, []),
    "triangle: tie broken by who sees the device, then by name": (
        [obs("router", "ether2", "core-sw"), obs("router", "ether3", "access-sw"),
         obs("core-sw", "Gi0/5", "access-sw"), obs("core-sw", "Gi0/7", "ap-101"),
         obs("access-sw", "2", "ap-101")],
        "router",
        {"core-sw": ("router", "ether2"), "access-sw": ("router", "ether3"),
         "ap-101": ("access-sw", "2")}, []),
    "only the child reports: the parent's port comes from remote_port": (
        [obs("ap-101", "eth0", "core-sw", "Gi0/7"), obs("router", "ether2", "core-sw")],
        "router",
        {"core-sw": ("router", "ether2"), "ap-101": ("core-sw", "Gi0/7")}, []),
    "unknown remote listed, not suggested; matched by management address": (
        [obs("router", "ether2", "00:11:22:33:44:55", "Gi0/1", "10.0.0.2"),
         obs("core-sw", "Gi0/9", "SEP001122334455", "Port 1", "10.0.5.7")],
        "router",
        {"core-sw": ("router", "ether2")}, ["SEP001122334455"]),
    "no uplink: parentless devices in inventory order are roots": (
        [obs("core-sw", "Gi0/5", "access-sw", "1"), obs("access-sw", "1", "core-sw")],
        None,
        {"access-sw": ("core-sw", "Gi0/5")}, []),
}


@pytest.mark.parametrize("case", list(CASES))
def test_suggested_parents(case: str) -> None:
    observations, uplink, parents, unknown = CASES[case]
    topo = build(observations, INV, uplink)
    got = {n: (s.parent, s.parent_port) for n, s in topo.suggestions.items()}
    assert got == parents
    assert [o.remote_name for o in topo.unknown] == unknown


def test_device_seen_by_nobody_gets_no_parent_and_is_listed() -> None:
    topo = build([obs("router", "ether2", "core-sw")], INV, "router")
    assert "printer-sw" not in topo.suggestions
    assert topo.unseen == ("access-sw", "ap-101", "printer-sw")
    assert render_tree(topo).splitlines()[-1] == \
        "not seen via LLDP: access-sw, ap-101, printer-sw"
    assert "no suggestion (not linked to a root via LLDP): access-sw, ap-101, printer-sw" \
        in render_suggestions(topo)


def test_tree_and_snippets_text() -> None:
    observations, uplink, _, _ = CASES["chain, names with domain and case"]
    more = [*observations, obs("access-sw", "8", "phone-12", "port1", "10.0.7.1")]
    inv = [*INV[:4], dev("printer-sw", parent="core-sw")]
    topo = build(more, [d if d.name != "access-sw" else dev("access-sw", "10.0.0.3",
                                                             parent="core-sw")
                        for d in inv], uplink)
    assert render_tree(topo) == "\n".join([
        "router",
        "└── ether2 → core-sw (Gi0/1)",
        "    └── Gi0/5 → access-sw (1)",
        "        ├── 7 → ap-101 (eth0)",
        "        └── 8 → phone-12 (port1) 10.0.7.1 [not in inventory]",
        "",
        "not seen via LLDP: printer-sw",
    ])
    assert render_suggestions(topo) == "\n".join([
        "- name: core-sw",
        "  parent: router  # seen on router ether2 (its Gi0/1)",
        "# access-sw: parent core-sw already set (seen on core-sw Gi0/5 (its 1))",
        "- name: ap-101",
        "  parent: access-sw  # seen on access-sw 7 (its eth0)",
        "# not in the inventory: phone-12 on access-sw 8",
        "# no suggestion (not linked to a root via LLDP): printer-sw",
    ])


def test_points_merge_neighbour_and_address_rows() -> None:
    tags = {"device": "core-sw", "role": "switch", "ifname": "Gi0/7",
            "remote_name": "ap-101", "remote_port": "eth0"}
    points = [
        Point("lldp", tags, {"capabilities": "wlan_access_point"}, 1),
        Point("lldp", {**tags, "remote_port": "70:3a:0e:1c:24:70"},
              {"mgmt_address": "10.0.0.11"}, 1),
        Point("interface", {"device": "core-sw"}, {"in_octets": 1}, 1),
    ]
    assert observations_from_points(points) == [
        Observation("core-sw", "Gi0/7", "ap-101", "eth0", ("10.0.0.11",))]


@pytest.mark.parametrize("raw,short", [("Core-SW.school.example.", "core-sw"),
                                       ("10.0.0.2", "10.0.0.2"), ("ap", "ap")])
def test_short_name(raw: str, short: str) -> None:
    assert short_name(raw) == short


# --- the database side of the commands (fake HTTP) ------------------------------------

def test_rows_from_prom_use_the_series_labels() -> None:
    from schoolnet.topology_cli import rows_from_prom

    asked: list[str] = []

    def fetch(url: str) -> dict[str, object]:
        asked.append(url)
        return {"status": "success", "data": {"result": [
            {"metric": {"__name__": "lldp_capabilities", "device": "core-sw",
                        "ifname": "Gi0/5", "remote_name": "access-sw", "remote_port": "1"},
             "value": [0, "0"]}]}}

    rows = rows_from_prom("http://127.0.0.1:1", "t1", "gy-a", 1.0, fetch=fetch)
    assert rows == [({"__name__": "lldp_capabilities", "device": "core-sw", "ifname": "Gi0/5",
                      "remote_name": "access-sw", "remote_port": "1"}, {})]
    assert "tenant%3D%22t1%22%2Csite%3D%22gy-a%22" in asked[0] and "%5B60m%5D" in asked[0]


def test_rows_from_influxql_strip_last_prefix() -> None:
    from schoolnet.topology_cli import rows_from_influxql

    def fetch(url: str) -> dict[str, object]:
        assert "GROUP+BY" in url and "%22site%22+%3D+%27gy-a%27" in url
        return {"results": [{"series": [{
            "tags": {"device": "core-sw", "ifname": "Gi0/7", "remote_name": "ap-101",
                     "remote_port": "eth0"},
            "columns": ["time", "last_mgmt_address", "last_capabilities"],
            "values": [[0, "10.0.0.11", None]]}]}]}

    (row,) = rows_from_influxql("http://127.0.0.1:1", "t1", "gy-a", 1.0, fetch=fetch)
    assert row[1]["mgmt_address"] == "10.0.0.11"


def test_run_wants_exactly_one_source() -> None:
    from schoolnet.topology_cli import EXIT_CONFIG, run

    assert run("tree", site_id="x", site_configs=".", poll=False) == EXIT_CONFIG
    assert run("tree", site_id="x", site_configs=".", poll=True,
               url="http://127.0.0.1:1") == EXIT_CONFIG


# --- the links the agent writes as `topology` points ------------------------------------

def test_links_are_oriented_from_the_root_each_once() -> None:
    observations, uplink, _, _ = CASES["loop: two switches see each other, parent is the one "
                                       "closer to the root"]
    got = links(build([*observations, obs("access-sw", "8", "phone-12", "port1")], INV, uplink))
    # Both ends report router<->core-sw and core-sw<->access-sw: one link each, as the
    # end nearer the root sees it; the phone hangs one hop below access-sw.
    assert got == [
        Link("core-sw", "Gi0/5", "access-sw", "1", True, 2, True),
        Link("router", "ether2", "core-sw", "Gi0/1", True, 1, True),
        Link("access-sw", "8", "phone-12", "port1", False, 3, False),
    ]


def test_links_from_the_far_end_and_cross_links() -> None:
    observations, uplink, _, _ = CASES["triangle: tie broken by who sees the device, then by "
                                       "name"]
    got = {(x.device, x.port, x.neighbour): (x.depth, x.parent_link)
           for x in links(build([*observations, obs("printer-sw", "3", "ap-101", "eth1")],
                                INV, uplink))}
    assert got == {
        ("router", "ether2", "core-sw"): (1, True),
        ("router", "ether3", "access-sw"): (1, True),
        # a cross link between two switches one hop from the root: not a parent link
        ("access-sw", "", "core-sw"): (1, False),
        ("access-sw", "2", "ap-101"): (2, True),
        ("core-sw", "Gi0/7", "ap-101"): (2, False),
        # only the far end (printer-sw) reports it: the near end's port is its remote_port
        ("ap-101", "eth1", "printer-sw"): (3, True),
    }


def test_links_of_devices_no_root_reaches_have_no_depth() -> None:
    got = links(build([obs("access-sw", "1", "printer-sw", "4"),
                       obs("access-sw", "2", "cam-1", "p0")], INV, "router"))
    assert [(x.device, x.neighbour, x.depth, x.parent_link) for x in got] == [
        ("access-sw", "printer-sw", None, False), ("access-sw", "cam-1", None, False)]


# --- the derived source: tapped polls in, `topology` points out -------------------------

def site(devices: list[Device], uplink: str | None = "router") -> Site:
    up = Uplink(kind="fibre", down_mbit=400, up_mbit=400, device=uplink,
                interface="ether1") if uplink else None
    return Site(id="gy-a", name="A", tenant="t1", uplink=up, agent=AgentSettings(),
                devices=tuple(devices))


def poll(device: str, *neighbours: tuple[str, str, str], reachable: int = 1,
         failed: str = "", table: str = "lldp_neighbours") -> list[Point]:
    """One SNMP poll's points: the device point, its lldp rows, a failed table."""
    out = [Point("device", {"device": device, "role": "switch"}, {"reachable": reachable}, 1)]
    out += [Point("lldp", {"device": device, "role": "switch", "ifname": port,
                           "remote_name": remote, "remote_port": rport},
                  {"capabilities": "bridge"}, 1) for port, remote, rport in neighbours]
    if failed:
        out.append(Point("snmp_error", {"device": device, "table": table,
                                        "error": failed}, {"message": "x"}, 1))
    return out


LLDP_INV = [dev("router", "10.0.0.1", role="router", vendor="mikrotik"),
            dev("core-sw", "10.0.0.2"), dev("ap-101", "10.0.0.11", role="ap")]
T0 = 1_800_000_000 * NS


def rows(points: list[Point]) -> dict[tuple[str, ...], dict[str, Any]]:
    """``topology`` points by (device, ifname, neighbour, neighbour_port)."""
    for p in points:
        check_point(p, DEFAULT_LIMITS, now_ns=p.time_ns)  # the wire contract holds
    return {tuple(p.tags.get(k, "") for k in ("device", "ifname", "neighbour",
                                              "neighbour_port")): dict(p.fields)
            for p in points if p.measurement == "topology"}


class FixedPolls:
    """An SNMP source stand-in that returns the points it is given, once each."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.next: list[Point] = []
        self.closed = False

    async def collect(self, now_ns: int) -> list[Point]:
        return self.next

    async def close(self) -> None:
        self.closed = True


def tapped_site() -> tuple[dict[str, FixedPolls], list[Any]]:
    polls = {d.name: FixedPolls(f"snmp:{d.name}") for d in LLDP_INV}
    lldp_inv = [replace(d, profiles=("system", "lldp") if d.role != "ap" else ("auto",))
                for d in LLDP_INV]
    probe = FixedPolls("probe:icmp")
    return polls, with_topology(site(lldp_inv), [*polls.values(), probe], refresh_s=900)


async def tick(sources: list[Any], now_ns: int) -> list[Point]:
    out: list[Point] = []
    for s in sources:
        out += await s.collect(now_ns)
    return out


def test_topology_points_on_change_and_every_refresh() -> None:
    polls, sources = tapped_site()
    assert [s.name for s in sources] == ["snmp:router", "snmp:core-sw", "snmp:ap-101",
                                         "probe:icmp", "topology"]
    topology = sources[-1]

    async def scenario() -> None:
        # Before the AP was polled: nothing (half a site would be written twice).
        polls["router"].next = poll("router", ("ether2", "core-sw.school.example", "Gi0/1"))
        assert await topology.collect(T0) == []
        await sources[0].collect(T0)
        assert await topology.collect(T0) == []
        polls["core-sw"].next = poll("core-sw", ("Gi0/1", "router", "ether2"),
                                     ("Gi0/7", "AP-101", "eth0"), ("Gi0/9", "SEP0011", "Port 1"))
        polls["ap-101"].next = poll("ap-101", reachable=0)  # down: polled, nothing read
        first = await tick(sources, T0 + 60 * NS)
        got = rows(first)
        assert got == {
            ("router", "ether2", "core-sw", "Gi0/1"):
                {"present": 1, "known": 1, "parent_link": 1, "depth": 1},
            ("core-sw", "Gi0/7", "ap-101", "eth0"):
                {"present": 1, "known": 1, "parent_link": 1, "depth": 2},
            ("core-sw", "Gi0/9", "SEP0011", "Port 1"):
                {"present": 1, "known": 0, "parent_link": 0, "depth": 2},
        }
        # The snmp points pass through the taps unchanged.
        assert [p for p in first if p.measurement != "topology"] == [
            *polls["router"].next, *polls["core-sw"].next, *polls["ap-101"].next]
        router_link = next(p for p in first if p.measurement == "topology"
                           and p.tags["device"] == "router")
        assert router_link.tags["role"] == "router" and router_link.tags["vendor"] == "mikrotik"
        # Unchanged: nothing until the refresh is due, then all links again.
        assert rows(await tick(sources, T0 + 120 * NS)) == {}
        assert rows(await tick(sources, T0 + 960 * NS)) == got
        # The phone is unplugged: written at once, its link one last time as gone.
        polls["core-sw"].next = poll("core-sw", ("Gi0/1", "router", "ether2"),
                                     ("Gi0/7", "AP-101", "eth0"))
        changed = rows(await tick(sources, T0 + 1020 * NS))
        assert changed[("core-sw", "Gi0/9", "SEP0011", "Port 1")]["present"] == 0
        assert sorted(v["present"] for v in changed.values()) == [0, 1, 1]
        assert rows(await tick(sources, T0 + 1080 * NS)) == {}

    asyncio.run(scenario())


def test_a_poll_that_did_not_read_the_table_keeps_the_neighbours_for_a_while() -> None:
    store = NeighbourStore(["core-sw"], max_age_s=3600)
    store.record("core-sw", poll("core-sw", ("Gi0/7", "ap-101", "eth0")), T0)
    # Unreachable; the neighbour table failed; the poll ended at an earlier table.
    for failed in (poll("core-sw", reachable=0), poll("core-sw", failed="timeout"),
                   poll("core-sw", failed="timeout", table="interfaces")):
        store.record("core-sw", failed, T0 + 60 * NS)
        assert [r[0]["remote_name"] for r in store.rows(T0 + 60 * NS)] == ["ap-101"]
    assert store.rows(T0 + 3601 * NS) == []  # too old now
    # A row_limit cut still read the table; an answered empty table means no neighbours.
    store.record("core-sw", poll("core-sw", ("Gi0/8", "x", "1"), failed="row_limit"), T0)
    assert len(store.rows(T0)) == 1
    store.record("core-sw", poll("core-sw", ("Gi0/8", "x", "1"), failed="gen_err",
                                 table="poe_ports"), T0)  # another table failed: rows count
    assert len(store.rows(T0)) == 1
    store.record("core-sw", poll("core-sw"), T0)
    assert store.rows(T0) == []


def test_a_failed_gather_counts_as_polled_and_close_reaches_the_poller() -> None:
    class Broken(FixedPolls):
        async def collect(self, now_ns: int) -> list[Point]:
            raise TimeoutError("gone")

    store = NeighbourStore(["core-sw"])
    inner = Broken("snmp:core-sw")
    tap = NeighbourTap(inner, "core-sw", store)

    async def scenario() -> None:
        with pytest.raises(TimeoutError):
            await tap.collect(T0)
        await tap.close()

    asyncio.run(scenario())
    assert store.ready and store.rows(T0) == [] and inner.closed
    assert tap.next == []  # other attributes are the poller's


def test_sites_without_lldp_get_no_topology_source() -> None:
    plain = FixedPolls("snmp:core-sw")
    assert with_topology(site(LLDP_INV), [plain]) == [plain]
    assert may_poll_lldp(replace(LLDP_INV[0], profiles=("auto",)))
