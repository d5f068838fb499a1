"""The demo's pure parts: the simulated city, the router recordings, the overview."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from schoolnet.demo.city import UPLINK_INTERFACE, default_city, on_simulator, write_city
from schoolnet.demo.overview import (
    CollectorState,
    SchoolState,
    Snapshot,
    parse_prometheus,
    render_lines,
    render_screen,
)
from schoolnet.demo.recordings import (
    IF_HC_IN_OCTETS,
    RouterInterface,
    octets_per_second,
    recording_value,
    router_recording,
)
from schoolnet.demo.runner import ExitFlags
from schoolnet.inventory import load_inventory


def _addresses() -> Callable[[], str]:
    n = iter(range(1, 1000))
    return lambda: f"127.0.0.{next(n)}"


def test_router_recording_is_sorted_and_counts_at_the_interface_rate() -> None:
    text = router_recording(sys_name="r1", location="Schule", contact="IT", uptime_ticks=5,
                            interfaces=[RouterInterface(index=1, name="WAN", alias="up",
                                                        speed_mbit=400, in_mbit=240,
                                                        out_mbit=80)])
    oids = [tuple(int(a) for a in line.split("|")[0].split(".")) for line in text.splitlines()]
    assert oids == sorted(oids) and len(set(oids)) == len(oids)
    assert all(line.count("|") == 2 for line in text.splitlines())
    tag, value = recording_value(text, f"{IF_HC_IN_OCTETS}.1")
    assert tag == "70:numeric"
    settings = dict(kv.split("=") for kv in value.split(","))
    assert float(settings["rate"]) == octets_per_second(240) == 30_000_000
    assert recording_value(text, "1.3.6.1.2.1.1.3.0")[0] == "67:numeric"  # uptime moves
    with pytest.raises(KeyError):
        recording_value(text, "1.3.6.1.2.1.1.99.0")


def test_default_city_has_the_schools_the_demo_promises() -> None:
    city = default_city()
    assert len(city.schools) >= 3
    kinds = {(s.uplink_kind, s.down_mbit, s.up_mbit) for s in city.schools}
    assert ("fibre", 400, 400) in kinds and ("dsl", 100, 40) in kinds
    # The demo's schools as docs and the overview describe them: a Gymnasium with two
    # switches and a Cisco controller, a Gesamtschule behind a firewall with an Aruba
    # controller, a Grundschule with one switch and two APs polled themselves.
    assert {s.id: sorted(d.role for d in s.devices) for s in city.schools} == {
        "gy-pestalozzi": ["controller", "router", "switch", "switch"],
        "ge-erich-fried": ["controller", "firewall", "router", "switch", "switch"],
        "gs-sodingen": ["ap", "ap", "router", "switch"],
    }
    for school in city.schools:
        # One tree per school: every device reaches the router through its parents.
        parent = {d.name: d.parent for d in school.devices}
        for name in parent:
            seen = {name}
            while parent[name]:
                name = parent[name]
                assert name in parent and name not in seen
                seen.add(name)
            assert name == "router"
        # Plausible traffic, below the contract.
        assert 40 <= school.traffic_in_mbit <= 300 and school.traffic_in_mbit < school.down_mbit
        assert school.traffic_out_mbit < school.up_mbit


def test_written_city_is_a_valid_inventory_with_one_address_per_device(tmp_path: Path) -> None:
    written = write_city(default_city(), tmp_path / "site-configs", broker=("127.0.0.1", 1883),
                         poll_interval_s=7, next_address=_addresses())
    inv = load_inventory(tmp_path / "site-configs")  # what `schoolnet config check` runs
    assert {s.id for s in inv} == {s.id for s in default_city().schools}
    # Regression: the site's name was once overwritten by its last device's name.
    assert {s.name for s in inv} == {s.name for s in default_city().schools}
    hosts = [d.host for s in inv for d in s.devices]
    assert len(hosts) == len(set(hosts)) == len(written.endpoints)
    for site in inv:
        assert site.agent.poll_interval_s == 7
        assert site.agent.broker.port == 1883
        assert site.uplink is not None and site.uplink.interface == UPLINK_INTERFACE
        for d in site.devices:
            assert d.snmp.version == "2c" and d.snmp.community is not None
            assert d.host.startswith("127.")
    assert list(written.simulators()) == ["main"]


def test_a_device_can_get_its_own_simulator(tmp_path: Path) -> None:
    city = on_simulator(default_city(), "gs-sodingen", "ap-flur", "flaky")
    written = write_city(city, tmp_path / "sc", broker=("127.0.0.1", 1883),
                         next_address=_addresses())
    assert list(written.simulators()) == ["main", "flaky"]
    assert len(written.listen("flaky")) == 1
    assert list(written.recordings("flaky")) == ["ubiquiti-m5"]
    with pytest.raises(KeyError):
        on_simulator(default_city(), "gs-sodingen", "no-such-device", "x")


def test_parse_prometheus_reads_counters_with_labels() -> None:
    text = (
        "# HELP x_total help\n# TYPE x_total counter\n"
        'x_total{kind="metrics"} 12\nx_total{kind="status"} 3\n'
        'drop_total{reason="not_json",site="a"} 2\nplain 1.5\n'
    )
    got = parse_prometheus(text)
    assert sum(v for _, v in got["x_total"]) == 15
    assert got["drop_total"] == [({"reason": "not_json", "site": "a"}, 2.0)]
    assert got["plain"] == [({}, 1.5)]


def _snapshot(tmp_path: Path) -> Snapshot:
    written = write_city(default_city(), tmp_path / "sc", broker=("127.0.0.1", 1883),
                         next_address=_addresses())
    schools = []
    for site in written.inventory:
        st = SchoolState(site=site)
        if site.id == "gy-pestalozzi":
            st.reachable = {d.name: 1.0 for d in site.devices}
            st.reachable["wlc"] = 0.0
            st.last_seen = {d.name: 1000.0 for d in site.devices}
            st.in_bps, st.out_bps = 240e6, 85e6
        schools.append(st)
    return Snapshot(taken=1003.0, tenant_names={"herne": "Stadt Herne"}, schools=schools,
                    collector=CollectorState(received=10, written=200,
                                             dropped={"unknown_device": 1},
                                             agent_state={("herne", "gy-pestalozzi"): "online"}),
                    problems=["agent-x exited with code 1"])


def test_overview_lines_show_devices_traffic_against_contract_and_age(tmp_path: Path) -> None:
    text = render_lines(_snapshot(tmp_path))
    gy = next(ln for ln in text.splitlines() if "gy-pestalozzi:" in ln)
    assert "agent online, devices 3/4 up" in gy
    assert "240.0 / 400 Mbit/s 60%" in gy and "85.0 / 400 Mbit/s 21%" in gy
    assert "last data 3 s ago" in gy
    gs = next(ln for ln in text.splitlines() if "gs-sodingen:" in ln)
    assert "devices 0/4 up" in gs and "no data" in gs
    assert "received 10 messages · written 200 points · dropped 1 (unknown_device 1)" in text
    assert "agent-x exited with code 1" in text
    assert "\x1b" not in text  # plain lines: no terminal codes in a log


def test_overview_screen_redraws_in_place(tmp_path: Path) -> None:
    frame = render_screen(_snapshot(tmp_path), ["title", "sub"], color=False)
    assert frame.startswith("\x1b[H") and frame.endswith("\x1b[J")
    assert "Pestalozzi-Gymnasium" in frame and "down: wlc" in frame


def test_first_signal_asks_to_stop_second_forces() -> None:
    flags = ExitFlags()
    flags.handle(signal.SIGINT, None)
    assert flags.should_exit and not flags.force_exit
    flags.handle(signal.SIGTERM, None)
    assert flags.force_exit
