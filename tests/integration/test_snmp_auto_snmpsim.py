"""profile: auto and `schoolnet agent discover` against snmpsim on loopback (real UDP).

Serves two real recordings from ../shared/snmp-dumps (skips where absent): the Aruba
Instant AP cluster and the MikroTik RouterOS box. A second snmpsim serves the WLAN
recordings written for this project from the vendors' published MIBs
(tests/data/snmprec/: Ruckus ZoneDirector and Unleashed, LANCOM LCOS, LCOS LX and WLC) and,
where present, the real LANCOM L-310agn dump: detection must pick the vendor profile
and the profile must turn the recording into the values written there.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent.cli import agent as agent_cli
from agent.snmp import SnmpDeviceSource, build_sources
from schoolnet.configfile import Secret
from schoolnet.inventory import AgentSettings, Device, Site, SnmpCredentials
from schoolnet.sim.servers import Snmpsim, free_port
from schoolnet.wire import Batch, Point, decode_batch, encode_batch
from tests.conftest import SHARED_DUMPS, loopback_address, shared_dump

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[1] / "data" / "snmprec"


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    recordings: dict[str, str | Path] = {
        "instant": shared_dump("aruba-instant.snmprec"),
        "routeros": shared_dump("routeros.snmprec"),
    }
    host = loopback_address()
    port = free_port(host, socket.SOCK_DGRAM)
    with Snmpsim(tmp_path_factory.mktemp("snmpsim-auto"), recordings, [(host, port)]):
        yield host, port


def test_auto_picks_vendor_profiles_per_device(sim: tuple[str, int]) -> None:
    host, port = sim

    def device(name: str) -> Device:
        return Device(name=name, host=host, port=port, role="ap", profiles=("auto",),
                      snmp=SnmpCredentials(version="2c", community=Secret(name)))

    site = Site(id="gy-auto", name="Auto", tenant="t", uplink=None,
                agent=AgentSettings(), devices=(device("instant"), device("routeros")))

    async def main() -> list[list[Point]]:
        srcs = [s for s in build_sources(site) if isinstance(s, SnmpDeviceSource)]
        try:
            return [await s.collect(time.time_ns()) for s in srcs]
        finally:
            for s in srcs:
                await s.close()

    instant, routeros = asyncio.run(main())
    kinds_i = {p.measurement for p in instant}
    kinds_r = {p.measurement for p in routeros}
    assert {"device", "interface", "ap", "ap_radio", "ssid"} <= kinds_i
    assert {"device", "interface", "health", "lldp", "ap_radio", "ssid"} <= kinds_r
    assert "snmp_error" not in kinds_i | kinds_r
    aps = [p for p in instant if p.measurement == "ap"]
    assert {p.tags["ap"] for p in aps} == {"instant-ap-src-1"}


def test_discover_prints_profiles_and_a_device_entry(sim: tuple[str, int]) -> None:
    host, port = sim
    result = CliRunner().invoke(agent_cli, ["discover", "--host", host, "--port", str(port),
                                            "--community", "routeros"])
    assert result.exit_code == 0, result.output
    assert "rule         mikrotik" in result.output
    assert "profile: [system, if_mib, mikrotik_wireless, host_resources, lldp]" in result.output
    assert "vendor: mikrotik" in result.output


# --- WLAN vendor profiles on written recordings ------------------------------------

@pytest.fixture(scope="module")
def wlan_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    recordings: dict[str, str | Path] = {
        name: DATA / f"{name}.snmprec"
        for name in ("ruckus-zd", "ruckus-unleashed", "lancom-lcos", "lancom-lx",
                     "lancom-wlc")}
    real_lcos = SHARED_DUMPS / "lcos.snmprec"
    if real_lcos.exists():
        recordings["lcos"] = real_lcos
    host = loopback_address()
    port = free_port(host, socket.SOCK_DGRAM)
    with Snmpsim(tmp_path_factory.mktemp("snmpsim-wlan"), recordings, [(host, port)]):
        yield host, port


def poll_auto(sim: tuple[str, int], community: str) -> tuple[str | None, list[Point]]:
    """One poll of the recording ``community`` with ``profile: auto``: the rule
    detection picked and the points."""
    host, port = sim
    dev = Device(name=community, host=host, port=port, role="ap", profiles=("auto",),
                 snmp=SnmpCredentials(version="2c", community=Secret(community)))
    site = Site(id="gy-wlan", name="WLAN", tenant="t", uplink=None,
                agent=AgentSettings(), devices=(dev,))

    async def main() -> tuple[str | None, list[Point]]:
        (src,) = [s for s in build_sources(site) if isinstance(s, SnmpDeviceSource)]
        try:
            points = await src.collect(time.time_ns())
            rule = src.detection.rule if src.detection else None
            return (rule.name if rule else None), points
        finally:
            await src.close()

    rule, points = asyncio.run(main())
    assert points[0].fields["reachable"] == 1
    assert not [p for p in points if p.measurement == "snmp_error"], points
    payload = encode_batch(Batch(site="gy-wlan", seq=1, points=tuple(points)))
    assert len(decode_batch(payload).points) == len(points)
    return rule, points


def of(points: list[Point], measurement: str) -> list[Point]:
    return [p for p in points if p.measurement == measurement]


def test_ruckus_zonedirector_aps_radios_ssids_and_joined_count(
        wlan_sim: tuple[str, int]) -> None:
    rule, points = poll_auto(wlan_sim, "ruckus-zd")
    # sysObjectID 3.1.5.15 is shared with old Unleashed: the ZD1200 sysDescr decides.
    assert rule == "ruckus_zd"
    aps = {p.tags["ap"]: p for p in of(points, "ap") if "ap" in p.tags}
    # The AP without a name (ruckusZDWLANAPDescription empty) is named by its MAC.
    assert sorted(aps) == ["00:24:82:aa:bb:03", "AP-Aula", "AP-Raum-204"]
    assert aps["AP-Aula"].tags["ap_mac"] == "00:24:82:aa:bb:01"
    assert aps["AP-Aula"].fields == {"status": "connected", "clients": 18, "model": "R650",
                                     "serial": "501901000101", "ip": "10.40.0.11",
                                     "uptime_s": 86400.0}
    assert aps["AP-Raum-204"].fields["clients"] == 12
    assert aps["00:24:82:aa:bb:03"].fields["status"] == "disconnected"
    (joined,) = [p for p in of(points, "ap") if "ap" not in p.tags]
    assert joined.fields == {"aps_joined": 2}
    radios = {(p.tags["ap"], p.tags["radio"], p.tags["band"]): p.fields
              for p in of(points, "ap_radio")}
    assert radios == {("AP-Aula", "0", "2.4ghz"): {"clients": 7, "channel": 6},
                      ("AP-Aula", "1", "5ghz"): {"clients": 11, "channel": 36},
                      ("AP-Raum-204", "0", "2.4ghz"): {"clients": 5, "channel": 11},
                      ("AP-Raum-204", "1", "5ghz"): {"clients": 7, "channel": 44}}
    # Two WLANs send "Schule" (26 + 0 stations): one point per SSID.
    assert {p.tags["ssid"]: p.fields for p in of(points, "ssid")} == {
        "Schule": {"clients": 26}, "Gast": {"clients": 4}}


def test_ruckus_unleashed_connected_aps_and_clients(wlan_sim: tuple[str, int]) -> None:
    rule, points = poll_auto(wlan_sim, "ruckus-unleashed")
    assert rule == "ruckus_unleashed"
    (ap,) = of(points, "ap")
    assert ap.fields == {"aps_joined": 4, "clients": 57} and "ap" not in ap.tags
    assert not of(points, "ap_radio") and not of(points, "ssid")


def test_lancom_lcos_ssids_radios_and_clients(wlan_sim: tuple[str, int]) -> None:
    rule, points = poll_auto(wlan_sim, "lancom-lcos")
    # The rule lists lancom_lx too: its LCOS-LX-MIB walk finds nothing and costs no error.
    assert rule == "lancom"
    (ap,) = of(points, "ap")
    assert ap.fields == {"clients": 26} and "ap" not in ap.tags
    assert {p.tags["ssid"]: p.fields for p in of(points, "ssid")} == {
        "Schule": {"clients": 23}, "Gast": {"clients": 3}}
    assert {(p.tags["radio"], p.tags["band"]): p.fields for p in of(points, "ap_radio")} == {
        ("WLAN-1", "2.4ghz"): {"channel": 11}, ("WLAN-2", "5ghz"): {"channel": 36}}


def test_lancom_lx_recording_gets_only_lx_points(wlan_sim: tuple[str, int]) -> None:
    # The other way round: lancom_lcos finds no LCOS-MIB on an LCOS LX AP.
    rule, points = poll_auto(wlan_sim, "lancom-lx")
    assert rule == "lancom"
    (ap,) = of(points, "ap")
    assert ap.fields == {"clients": 5}
    assert {p.tags["radio"] for p in of(points, "ap_radio")} == {"WLAN-1", "WLAN-2"}
    assert all("channel" not in p.fields for p in of(points, "ap_radio"))


def test_lancom_wlc_managed_aps_missing_ap_and_joined_count(
        wlan_sim: tuple[str, int]) -> None:
    rule, points = poll_auto(wlan_sim, "lancom-wlc")
    # The lancom rule lists lancom_wlc beside the AP profiles; their walks find nothing.
    assert rule == "lancom"
    aps: dict[str, dict[str, object]] = {}
    for p in of(points, "ap"):
        if "ap" in p.tags:
            assert p.tags["ap_mac"].startswith("00:a0:57:11:22:0")
            aps.setdefault(p.tags["ap"], {}).update(p.fields)
    # Connected APs: up and clients over their radios (7 + 11); the missing one: status.
    assert aps == {"AP-Aula": {"up": 1, "clients": 18},
                   "AP-Raum-204": {"up": 1, "clients": 5},
                   "AP-Sporthalle": {"status": "missing", "ip": "10.40.0.13",
                                     "model": "LANCOM LN-1700"}}
    # Two CAPWAP connections in state run; the third (join) is not counted.
    (joined,) = [p for p in of(points, "ap") if "ap" not in p.tags]
    assert joined.fields == {"aps_joined": 2}
    assert not of(points, "ssid") and not of(points, "ap_radio")


def test_real_lcos_device_without_wlan_tables_writes_no_wlan_points(
        wlan_sim: tuple[str, int]) -> None:
    if not (SHARED_DUMPS / "lcos.snmprec").exists():
        pytest.skip("../shared/snmp-dumps/lcos.snmprec is absent")
    rule, points = poll_auto(wlan_sim, "lcos")
    assert rule == "lancom"
    assert not [p for p in points if p.measurement in ("ap", "ap_radio", "ssid")]


def test_discover_names_the_zonedirector_rule(wlan_sim: tuple[str, int]) -> None:
    host, port = wlan_sim
    result = CliRunner().invoke(agent_cli, ["discover", "--host", host, "--port", str(port),
                                            "--community", "ruckus-zd"])
    assert result.exit_code == 0, result.output
    assert "rule         ruckus_zd" in result.output
    assert "profile: [system, if_mib, ruckus_zd]" in result.output
    assert "vendor: ruckus" in result.output
