"""agent.snmp.topology: the neighbour graph, the tree and suggested parents (pure)."""

from __future__ import annotations

import pytest

from agent.snmp.topology import (
    Observation,
    build,
    observations_from_points,
    render_suggestions,
    render_tree,
    short_name,
)
from schoolnet.configfile import Secret
from schoolnet.inventory import Device, SnmpCredentials
from schoolnet.wire import Point

CREDS = SnmpCredentials(version="2c", community=Secret("x"))


def dev(name: str, host: str = "", parent: str | None = None, role: str = "switch") -> Device:
    return Device(name=name, host=host or f"{name}.school.example", role=role, parent=parent,
                  snmp=CREDS)


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
