"""Profiles beyond IF-MIB on real recordings (fake SNMP client, no sockets).

The recordings: ../shared/snmp-dumps (LibreNMS fixtures; tests skip where absent), the
snmpsim-data package, and tests/data/snmprec/poe-switch.snmprec (written from RFC 3621,
see tests/data/snmprec/README.md). Every asserted value is read off the recording.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from agent.snmp import SnmpDeviceSource, build_sources
from agent.snmp.client import SnmpError
from agent.snmp.convert import as_string
from agent.snmp.detect import detect, load_rules
from agent.snmp.fake import FakeSnmpClient, parse_snmprec
from agent.snmp.profile import load_profiles, resolve
from schoolnet.configfile import Secret
from schoolnet.inventory import AgentSettings, Device, Site, SnmpCredentials
from schoolnet.sim.servers import read_recording, snmpsim_data_file
from schoolnet.wire import Batch, Point, decode_batch, encode_batch
from tests.conftest import shared_dump

DATA = Path(__file__).resolve().parents[1] / "data" / "snmprec"


def source(text: str, profiles: Sequence[str]) -> tuple[SnmpDeviceSource, FakeSnmpClient]:
    client = FakeSnmpClient({"dev": text})
    dev = Device(name="dev1", host="dev", port=161, role="switch", profiles=tuple(profiles),
                 snmp=SnmpCredentials(version="2c", community=Secret("x")))
    site = Site(id="gy-unit", name="Unit", tenant="t", uplink=None,
                agent=AgentSettings(), devices=(dev,))
    (src,) = build_sources(site, client=client)
    assert isinstance(src, SnmpDeviceSource)
    return src, client


def poll(text: str, profiles: Sequence[str]) -> list[Point]:
    src, _ = source(text, profiles)
    return asyncio.run(src.collect(time.time_ns()))


def of(points: Sequence[Point], measurement: str) -> list[Point]:
    return [p for p in points if p.measurement == measurement]


def wire_valid(points: Sequence[Point]) -> bool:
    payload = encode_batch(Batch(site="gy-unit", seq=1, points=tuple(points)))
    return len(decode_batch(payload).points) == len(points)


def dump(name: str) -> str:
    return read_recording(shared_dump(name))


@functools.cache
def packaged(name: str) -> str:
    return read_recording(snmpsim_data_file(name))


def subset(text: str, *prefixes: str) -> str:
    """The lines of a recording under some subtrees: a 20 MB controller recording
    shrinks to what the profile reads, and the fake agent stays fast."""
    return "\n".join(line for line in text.splitlines() if line.startswith(prefixes))


WLC_TREES = ("1.3.6.1.2.1.1.", "1.3.6.1.4.1.14179.2.2.1.", "1.3.6.1.4.1.14179.2.2.2.",
             "1.3.6.1.4.1.14179.2.2.13.")


# --- standard profiles -------------------------------------------------------------

def test_procurve_chassis_temperature_from_entity_sensor() -> None:
    points = poll(dump("procurve.snmprec"), ["system", "entity_sensor"])
    assert wire_valid(points)
    # Eight rows; seven are type "other" with value 0 (filtered), one is a thermometer.
    (temp,) = of(points, "sensor")
    assert temp.tags["sensor"] == "Chassis Temperature"
    assert temp.tags["sensor_type"] == "celsius"
    assert temp.fields == {"value": 20.0}
    assert not of(points, "snmp_error")


def test_entity_sensor_scale_and_precision() -> None:
    # 12345 with SI prefix milli (8) and precision 1: 1234.5 mV = 1.2345 V.
    text = "\n".join([
        "1.3.6.1.2.1.99.1.1.1.1.7|2|4", "1.3.6.1.2.1.99.1.1.1.2.7|2|8",
        "1.3.6.1.2.1.99.1.1.1.3.7|2|1", "1.3.6.1.2.1.99.1.1.1.4.7|2|12345",
        "1.3.6.1.2.1.99.1.1.1.5.7|2|1", "1.3.6.1.2.1.47.1.1.1.1.7.7|4|PSU 1 12V"])
    (volts,) = of(poll(text, ["entity_sensor"]), "sensor")
    assert volts.tags == {"device": "dev1", "role": "switch", "sensor": "PSU 1 12V",
                          "sensor_type": "volts_dc"}
    assert volts.fields["value"] == pytest.approx(1.2345)
    assert volts.fields["status"] == "ok"


def test_routeros_cpu_and_memory_from_host_resources() -> None:
    points = poll(dump("routeros.snmprec"), ["host_resources"])
    cpu, mem = of(points, "health")
    # hrProcessorLoad 0, 0, 21, 0 on four CPUs.
    assert cpu.fields == {"cpu_pct": 5.25, "cpu_max_pct": 21, "cpus": 4}
    # "main memory": 65536 units of 1024 B, 27196 used; "system disk" is not RAM.
    assert mem.fields["mem_total_bytes"] == 65536 * 1024
    assert mem.fields["mem_used_bytes"] == 27196 * 1024
    assert mem.fields["mem_used_pct"] == pytest.approx(27196 / 65536 * 100)
    assert set(cpu.tags) == {"device", "role"}


def test_routeros_lldp_neighbours() -> None:
    points = poll(dump("routeros.snmprec"), ["lldp"])
    assert wire_valid(points)
    lldp = of(points, "lldp")
    # RouterOS's one-part lldpRemTable index (no local port) still lists all 12.
    assert len(lldp) == 12
    assert [(p.tags.get("remote_name"), p.tags.get("remote_port")) for p in lldp[:4]] == [
        ("S5120-Tech", "GigabitEthernet1/0/17"), ("S5120-Tech", "GigabitEthernet1/0/17"),
        ("2530-blue_shed", "8"), ("blue_shed-wirelesswire", "vlan200")]
    assert str(lldp[2].fields["remote_descr"]).startswith("HP J9774A 2530-8G-PoEP Switch")
    assert lldp[0].fields["chassis_id_subtype"] == "mac_address"


def test_poe_ports_budget_and_lldp_on_written_recording() -> None:
    text = (DATA / "poe-switch.snmprec").read_text()
    points = poll(text, ["poe", "lldp"])
    assert wire_valid(points)
    poe = of(points, "poe")
    ports = {p.tags["ifindex"]: p for p in poe if "ifindex" in p.tags}
    assert ports["1"].fields["detection"] == "delivering_power"
    assert ports["1"].fields["power_class"] == "class4"
    assert ports["1"].tags == {"device": "dev1", "role": "switch", "pse": "1",
                               "ifindex": "1", "ifname": "1"}
    assert ports["3"].fields["admin_enabled"] == "false"
    # RFC 3621 columns: 8 MPSAbsent, 13 OverLoad, 14 Short (11 is InvalidSignature).
    assert ports["2"].fields["mps_absent"] == 3 and ports["1"].fields["overloads"] == 1
    assert ports["2"].fields["short_circuits"] == 0
    (budget,) = [p for p in poe if "ifindex" not in p.tags]
    assert budget.fields == {"power_w": 370.0, "status": "on", "consumption_w": 42.0,
                             "threshold_pct": 80}
    neighbour, address = of(points, "lldp")
    assert neighbour.tags["remote_name"] == "ap-raum-101"
    assert neighbour.tags["ifname"] == "1"
    assert neighbour.tags["remote_port"] == "70:3a:0e:1c:24:70"  # a MAC, not text
    assert neighbour.fields["capabilities"] == "wlan_access_point"
    assert address.fields["mgmt_address"] == "10.128.0.11"
    assert address.tags["remote_name"] == "ap-raum-101"


# --- WLAN --------------------------------------------------------------------------

def test_aruba_instant_ap_radios_and_ssid() -> None:
    points = poll(dump("aruba-instant.snmprec"), ["aruba_instant"])
    assert wire_valid(points)
    ap_up, ap, ap_clients = of(points, "ap")
    assert ap.tags["ap"] == "instant-ap-src-1" and ap.tags["ap_mac"] == "70:3a:0e:c9:c2:46"
    # The virtual controller's normalised state for the outage engine (aiAPStatus up).
    assert ap_up.tags["ap"] == "instant-ap-src-1" and ap_up.fields == {"up": 1}
    assert ap.fields["status"] == "up" and ap.fields["model"] == "225"
    assert ap.fields["ip"] == "10.128.0.11" and ap.fields["cpu_pct"] == 9
    assert ap_clients.fields == {"clients": 0}
    radios = {p.tags["radio"]: p for p in of(points, "ap_radio")}
    # Instant reports channels as text ("116E"); a string field must not share the name
    # of the controllers' integer `channel` (InfluxDB fixes a field's type).
    assert radios["0"].fields["channel_name"] == "116E" and radios["1"].fields["channel_name"] == "6"
    assert "channel" not in radios["0"].fields
    assert radios["1"].fields["channel_util_pct"] == 14
    assert radios["0"].tags["ap"] == "instant-ap-src-1"
    (ssid,) = of(points, "ssid")
    assert ssid.tags["ssid"] == "EOU-Regional" and ssid.fields == {"clients": 0}


def test_cisco_wlc_aps_clients_and_joined_count() -> None:
    points = poll(subset(packaged("network/appliance/cisco-controller"), *WLC_TREES),
                  ["cisco_wlc"])
    assert wire_valid(points)
    aps = [p for p in of(points, "ap") if "status" in p.fields]
    assert len(aps) == 226
    assert all(p.fields["status"] == "associated" for p in aps)
    clients = {p.tags["ap"]: p.fields["clients"] for p in of(points, "ap")
               if "clients" in p.fields}
    # erjiao_sw (00:3a:98:b0:2e:70): bsnApIfNoOfUsers 0 (slot 0) + 2 (slot 1).
    assert clients["erjiao_sw"] == 2
    (joined,) = [p for p in of(points, "ap") if "aps_joined" in p.fields]
    assert joined.fields["aps_joined"] == 226 and "ap" not in joined.tags
    radio = {(p.tags["ap"], p.tags["radio"]): p for p in of(points, "ap_radio")}
    assert radio[("erjiao_sw", "0")].tags["band"] == "2.4ghz"
    assert radio[("erjiao_sw", "1")].fields["channel"] == 161
    assert radio[("erjiao_sw", "0")].fields["channel_util_pct"] == 27


def test_aruba_controller_aps_and_radios() -> None:
    points = poll(packaged("network/wifi/aruba-7010"), ["aruba_controller"])
    names = sorted(p.tags["ap"] for p in of(points, "ap") if "status" in p.fields)
    assert names == ["Test-H", "WRD-EN", "WRD-ES", "WRD-WS-1"]
    radio = {(p.tags["ap"], p.tags["radio"]): p for p in of(points, "ap_radio")}
    assert radio[("Test-H", "1")].tags["band"] == "5ghz"
    assert radio[("Test-H", "1")].fields == {"channel": 149}
    (joined,) = [p for p in of(points, "ap") if "aps_joined" in p.fields]
    assert joined.fields["aps_joined"] == 4


def test_mikrotik_wireless_clients_per_interface_and_ssid() -> None:
    points = poll(dump("routeros.snmprec"), ["mikrotik_wireless"])
    radios = {p.tags["radio"]: p.fields for p in of(points, "ap_radio")}
    assert radios["wlan1"]["clients"] == 7 and radios["wlan1"]["freq_mhz"] == 2412
    assert radios["wlan2"]["ssid"] == "WARKOP-KOPIBOSS-A"
    ssids = {p.tags["ssid"]: p.fields for p in of(points, "ssid")}
    assert ssids["WARKOP-KOPIBOSS"] == {"clients": 4, "radios": 2}


# WLAN vendors written from their published MIBs (tests/data/snmprec/README.md): not yet
# proven on a real device.

def test_unifi_radios_ssids_and_clients_from_written_recording() -> None:
    text = (DATA / "unifi-ap.snmprec").read_text()
    assert _detect_text(text) == ("unifi_ap", ["system", "if_mib", "unifi", "host_resources"])
    points = poll(text, ["unifi"])
    assert wire_valid(points)
    assert not of(points, "snmp_error")
    aps = of(points, "ap")
    (system,) = [p for p in aps if "model" in p.fields]
    assert system.fields == {"model": "UAP-AC-Pro", "ip": "10.20.1.31"}
    (total,) = [p for p in aps if "clients" in p.fields]
    # unifiVapNumStations 5 + 1 (ng) + 21 + 3 (na) over four VAPs.
    assert total.fields == {"clients": 30, "radios": 4} and "ap" not in total.tags
    radios: dict[str, dict[str, object]] = {}
    for p in of(points, "ap_radio"):
        radios.setdefault(p.tags["radio"], {}).update(p.fields)
    assert radios == {"ng": {"channel_util_pct": 47, "clients": 6, "channel": 6},
                      "na": {"channel_util_pct": 12, "clients": 24, "channel": 36}}
    ssids = {p.tags["ssid"]: p.fields for p in of(points, "ssid")}
    assert ssids == {"Schule": {"clients": 26, "radios": 2}, "Gast": {"clients": 4, "radios": 2}}


def test_lancom_lx_station_counts_from_written_recording() -> None:
    text = (DATA / "lancom-lx.snmprec").read_text()
    assert _detect_text(text) == ("lancom", ["system", "if_mib", "lancom_lx", "lancom_lcos",
                                              "lancom_wlc", "lldp"])
    points = poll(text, ["lancom_lx"])
    assert wire_valid(points)
    assert not of(points, "snmp_error")
    (ap,) = of(points, "ap")
    assert ap.fields == {"clients": 5} and "ap" not in ap.tags
    radios = {(p.tags["radio"], p.tags["band"]): p.fields for p in of(points, "ap_radio")}
    assert radios == {("WLAN-1", "2.4ghz"): {"clients": 2}, ("WLAN-2", "5ghz"): {"clients": 3}}
    ssids = {p.tags["ssid"]: p.fields for p in of(points, "ssid")}
    assert ssids == {"Schule": {"clients": 3}, "Gast": {"clients": 2}}


def test_lancom_lx_profile_on_an_lcos_device_writes_nothing_and_no_error() -> None:
    # The real LCOS L-310agn recording has no LCOS-LX-MIB: the rule still gives it
    # lancom_lx, which must cost nothing but the empty walk.
    points = poll(dump("lcos.snmprec"), ["lancom_lx"])
    assert not of(points, "ap") and not of(points, "ap_radio") and not of(points, "ssid")
    assert not of(points, "snmp_error")


def test_ruckus_smartzone_aps_and_ssids_from_written_recording() -> None:
    text = (DATA / "ruckus-sz.snmprec").read_text()
    assert _detect_text(text) == ("ruckus", ["system", "if_mib", "ruckus_sz", "host_resources"])
    points = poll(text, ["ruckus_sz"])
    assert wire_valid(points)
    assert not of(points, "snmp_error")
    aps = {p.tags["ap"]: p for p in of(points, "ap")}
    assert sorted(aps) == ["AP-Aula", "AP-Raum-101", "AP-Sporthalle"]
    aula = aps["AP-Aula"]
    assert aula.tags["ap_mac"] == "00:33:58:11:22:01"
    assert aula.fields == {"status": "Connect", "clients": 23, "model": "R650",
                           "serial": "431901000101", "ip": "10.30.0.11",
                           "group": "Schule-Zone", "location": "Aula"}
    assert aps["AP-Sporthalle"].fields["status"] == "Disconnect"
    assert aps["AP-Raum-101"].fields["clients"] == 11
    ssids = {p.tags["ssid"]: p.fields for p in of(points, "ssid")}
    assert ssids == {"Schule": {"clients": 30}, "Gast": {"clients": 4}}


def test_ruckus_smartzone_ssid_clients_on_the_real_recording() -> None:
    # SZ104 3.6.2: ruckusSZWLANNumSta 52, 16, 9, 0, 67, 2 on six WLANs whose SSIDs the
    # recording anonymised to "<private>" (so they fold into one point); the sum equals
    # the controller's own station total in the recording (….25053.1.4.1.1.1.15.2.0 = 146).
    # The recording has no ruckusSZAPTable: no ap points, and no error either.
    points = poll(dump("ruckuswireless-sz.snmprec"), ["ruckus_sz"])
    assert wire_valid(points)
    ssids = {p.tags["ssid"]: p.fields for p in of(points, "ssid")}
    assert ssids == {"<private>": {"clients": 146}}
    assert not of(points, "ap") and not of(points, "snmp_error")


def test_aerohive_clients_per_interface_and_ssid_from_written_recording() -> None:
    text = (DATA / "aerohive-ap.snmprec").read_text()
    assert _detect_text(text) == ("aerohive", ["system", "if_mib", "aerohive", "lldp"])
    points = poll(text, ["aerohive"])
    assert wire_valid(points)
    assert not of(points, "snmp_error")
    (ap,) = of(points, "ap")
    assert ap.fields == {"clients": 6} and "ap" not in ap.tags
    radios = {p.tags["radio"]: p.fields for p in of(points, "ap_radio")}
    assert radios == {"wifi0.1": {"clients": 2, "channel": 6},
                      "wifi1.1": {"clients": 3, "channel": 44},
                      "wifi1.2": {"clients": 1, "channel": 44}}
    ssids = {p.tags["ssid"]: p.fields for p in of(points, "ssid")}
    assert ssids == {"Schule": {"clients": 5}, "Gast": {"clients": 1}}


def test_cisco_9800_joined_aps_and_clients_from_written_recording() -> None:
    text = (DATA / "cisco-9800.snmprec").read_text()
    assert _detect_text(text) == ("cisco_9800", ["system", "if_mib", "cisco_9800"])
    points = poll(text, ["cisco_9800"])
    assert wire_valid(points)
    assert not of(points, "snmp_error")
    aps = {p.tags["ap"]: p for p in of(points, "ap") if "ap" in p.tags}
    assert sorted(aps) == ["AP-Mensa", "AP-Physik-2OG", "AP-Turnhalle"]
    assert aps["AP-Physik-2OG"].tags["ap_mac"] == "00:66:77:88:99:02"
    assert aps["AP-Physik-2OG"].fields == {"clients": 25, "uptime_s": 43200.0}
    assert aps["AP-Mensa"].fields["clients"] == 17 and aps["AP-Turnhalle"].fields["clients"] == 0
    (joined,) = [p for p in of(points, "ap") if "aps_joined" in p.fields]
    assert joined.fields == {"aps_joined": 3} and "ap" not in joined.tags


# --- partial failure, limits -------------------------------------------------------

def test_a_table_that_times_out_costs_only_that_table() -> None:
    src, client = source(dump("routeros.snmprec"),
                         ["system", "if_mib", "lldp", "host_resources"])
    # An agent that answers everything but errors on LLDP (a PDU error: it answered).
    client.fail_subtree[("dev", (1, 0, 8802))] = SnmpError("gen_err", "genErr", answered=True)
    points = asyncio.run(src.collect(time.time_ns()))
    assert points[0].fields["reachable"] == 1
    assert len(of(points, "interface")) == 12 and len(of(points, "health")) == 2
    errors = {p.tags["table"]: p.fields["consecutive_failures"]
              for p in of(points, "snmp_error")}
    assert errors == {"lldp_neighbours": 1, "lldp_addresses": 1}
    points = asyncio.run(src.collect(time.time_ns()))
    assert {p.fields["consecutive_failures"] for p in of(points, "snmp_error")} == {2}


def test_row_limit_cuts_and_reports() -> None:
    profiles = load_profiles()
    src, _ = source(subset(packaged("network/appliance/cisco-controller"), *WLC_TREES),
                    ["cisco_wlc"])
    table = next(t for t in profiles["cisco_wlc"].tables if t.name == "wlc_aps")
    limited = type(table)(**{**{f: getattr(table, f) for f in (
        "name", "measurement", "index", "columns", "lookups", "link_speed", "alt_index",
        "filters", "aggregate", "group_by")}, "max_rows": 100})
    src.tables = (limited,)
    src._specs = {limited.name: limited.rate_specs}
    points = asyncio.run(src.collect(time.time_ns()))
    assert len(of(points, "ap")) == 100
    (err,) = of(points, "snmp_error")
    assert err.tags["error"] == "row_limit" and "226 rows" in str(err.fields["message"])


# --- auto-detection ----------------------------------------------------------------

DUMP_RULES = {
    "aerohive.snmprec": ("aerohive", ["aerohive", "lldp"]),
    "aruba-instant.snmprec": ("aruba_instant", ["aruba_instant", "lldp"]),
    "arubaos.snmprec": ("aruba_controller", ["aruba_controller", "entity_sensor", "lldp"]),
    "ciscowlc.snmprec": ("cisco_wlc", ["cisco_wlc"]),
    "fortigate.snmprec": ("fortinet", []),
    "lcos.snmprec": ("lancom", ["lancom_lx", "lancom_lcos", "lancom_wlc", "lldp"]),
    "procurve.snmprec": ("hpe_aruba_switch", ["entity_sensor", "poe", "lldp"]),
    "routeros.snmprec": ("mikrotik", ["mikrotik_wireless", "host_resources", "lldp"]),
    "ruckuswireless-sz.snmprec": ("ruckus", ["ruckus_sz", "host_resources"]),
    "unifi.snmprec": ("unifi_ap", ["unifi", "host_resources"]),
}
PACKAGED_RULES = {
    "network/wifi/aruba-7010": "aruba_controller",
    "network/wifi/aruba-7020": "aruba_controller",
    "network/wifi/aruba-7210": "aruba_controller",
    "network/wifi/ruckus-smartcell-gateway": "ruckus",
    "network/wifi/ubiquiti-m5": "ubiquiti",
    "network/appliance/cisco-controller": "cisco_wlc",
    "network/switch/cisco-c3560": "cisco_ios",
    "network/switch/cisco-c3750": "cisco_ios",
    "network/switch/hpe-procurve-516733-b21": "hpe_aruba_switch",
    "network/router/juniper-mx960-12-3r6-6": "juniper",
    "network/firewall/paloalto-pa-5000": "paloalto",
    "network/firewall/fortinet-xcu": "fortinet",
}


def _detect_text(text: str) -> tuple[str | None, list[str]]:
    data = parse_snmprec(subset(text, "1.3.6.1.2.1.1.1.0|", "1.3.6.1.2.1.1.2.0|"))
    found = detect(load_rules(), as_string("oid", data.get((1, 3, 6, 1, 2, 1, 1, 2, 0))) or "",
                   as_string("string", data.get((1, 3, 6, 1, 2, 1, 1, 1, 0))) or "")
    return (found.rule.name if found.rule else None), list(found.profiles)


@pytest.mark.parametrize("name", sorted(DUMP_RULES))
def test_detection_on_every_shared_dump(name: str) -> None:
    rule, extra = DUMP_RULES[name]
    assert _detect_text(dump(name)) == (rule, ["system", "if_mib", *extra])


@pytest.mark.parametrize("name", sorted(PACKAGED_RULES))
def test_detection_on_snmpsim_data_recordings(name: str) -> None:
    assert _detect_text(packaged(name))[0] == PACKAGED_RULES[name]


def test_every_rule_names_profiles_that_exist_and_fit_together() -> None:
    profiles = load_profiles()
    rules = load_rules()
    for rule in rules.rules:
        resolve([*rules.base, *rule.profiles], profiles, where=rule.name)


def test_auto_detects_at_start_and_again_after_a_reboot() -> None:
    instant = dump("aruba-instant.snmprec")
    src, client = source(instant, ["auto"])
    points = asyncio.run(src.collect(time.time_ns()))
    assert src.detection is not None and src.detection.rule is not None
    assert src.detection.rule.name == "aruba_instant"
    assert of(points, "ap_radio") and len(of(points, "interface")) == 10
    # Same device, now a RouterOS box that has just rebooted (sysUpTime lower).
    routeros = parse_snmprec(dump("routeros.snmprec"))
    routeros[(1, 3, 6, 1, 2, 1, 1, 3, 0)] = 100
    client.set_device("dev", routeros)
    asyncio.run(src.collect(time.time_ns()))  # sees the reboot
    points = asyncio.run(src.collect(time.time_ns()))  # detects again
    assert src.detection.rule is not None and src.detection.rule.name == "mikrotik"
    assert of(points, "health") and not of(points, "ap")
