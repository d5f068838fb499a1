"""SNMP profiles: the shipped YAML files and the strict loader's file:line errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent.snmp import build_sources
from agent.snmp.detect import detect, load_rules
from agent.snmp.profile import PROFILE_DIR, Profile, load_profiles, resolve
from schoolnet.configfile import ConfigError, Secret
from schoolnet.inventory import AgentSettings, Device, Site, SnmpCredentials

OID_LINE = re.compile(r"^\s*-?\s*\{?\s*(?:oid:\s*)?(\d+(?:\.\d+)+)\s*:?")


def test_shipped_profiles_load() -> None:
    profiles = load_profiles()
    assert {"system", "if_mib"} <= set(profiles)
    (table,) = profiles["if_mib"].tables
    assert table.measurement == "interface"
    assert [p.tag for p in table.index] == ["ifindex"]
    # The preferred sources are read every poll, the 32-bit/ifDescr/ifSpeed ones on need.
    assert {c.mib_name for c in table.fallbacks} == {
        "ifDescr", "ifSpeed", "ifInOctets", "ifOutOctets"}
    assert {s.rate: s.link_checked for s in table.rate_specs} == {
        "in_bps": True, "out_bps": True, "in_errors_ps": False, "out_errors_ps": False,
        "in_discards_ps": False, "out_discards_ps": False}
    (group,) = profiles["system"].scalars
    assert group.measurement == "device"
    assert [c.role for c in group.objects if c.role] == ["uptime"]


@pytest.mark.parametrize("path", sorted(PROFILE_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_oid_in_shipped_profiles_has_a_name_comment(path: Path) -> None:
    for n, line in enumerate(path.read_text().splitlines(), 1):
        code = line.split("#", 1)[0]
        if re.search(r"\b\d+\.\d+\.\d+\.\d+", code):
            assert re.search(r"#\s*[A-Za-z]", line), f"{path.name}:{n}: OID without # name"


GOOD_TABLE = """\
profile: p
tables:
  things:
    measurement: interface
    index: [{tag: ifindex, type: integer}]
    columns:
      1.3.6.1.2.1.2.2.1.2: {tag: ifname, type: string}                # ifDescr
      1.3.6.1.2.1.2.2.1.14: {field: in_errors, type: counter32, rate: true}  # ifInErrors
"""


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        pytest.param(GOOD_TABLE.replace("index:", "indexes:"), 5, "things.indexes: unknown key",
                     id="unknown key"),
        pytest.param(GOOD_TABLE.replace("type: counter32", "type: counter"), 8,
                     "type: must be one of", id="unknown type"),
        pytest.param(GOOD_TABLE.replace("  # ifInErrors", ""), 8,
                     "needs a `# name` comment", id="OID without name comment"),
        pytest.param(GOOD_TABLE.replace("1.3.6.1.2.1.2.2.1.14:", "ifInErrors:"), 8,
                     "keys must be numeric OIDs", id="symbolic OID"),
        pytest.param(GOOD_TABLE.replace("measurement: interface", "measurement: ifaces"), 4,
                     "unknown measurement 'ifaces'", id="unknown measurement"),
        pytest.param(GOOD_TABLE.replace("tag: ifname,", "tag: port,"), 7,
                     "measurement 'interface' allows no tag 'port'", id="tag not in contract"),
        pytest.param(GOOD_TABLE.replace("tag: ifname,", "tag: device,"), 7,
                     "set by the poller", id="device tag from a column"),
        pytest.param(GOOD_TABLE.replace("type: counter32, rate: true", "type: gauge, rate: true"),
                     8, "only counter fields have rates", id="rate on a gauge"),
        pytest.param(GOOD_TABLE.replace("field: in_errors", "field: In-Errors"), 8,
                     "not a valid field name", id="bad field name"),
        pytest.param(GOOD_TABLE.replace("profile: p", "profile: q"), 1,
                     "must match the file name 'p'", id="profile name != file name"),
        pytest.param(GOOD_TABLE + "      1.3.6.1.2.1.2.2.1.20: {field: in_errors, type: string}"
                     "  # ifOutErrors\n", 9, "another type than ifInErrors",
                     id="fallback of another type"),
        pytest.param(GOOD_TABLE + "    link_speed: {field: speed_mbps, rates: [in_errors_ps]}\n",
                     9, "no field 'speed_mbps'", id="link_speed names a missing field"),
        pytest.param(GOOD_TABLE.replace("{tag: ifname, type: string}",
                                        "{role: uptime, type: timeticks}"), 7,
                     "must be one of discontinuity", id="uptime role in a table"),
        pytest.param(GOOD_TABLE + "    lookups:\n      - {index: nope, oid: 1.3.6.1.2.1.31.1.1.1.1,"
                     " tag: ifname}  # ifName\n", 10, "no index part 'nope'",
                     id="lookup on an unknown index part"),
        pytest.param("profile: p\n", 1, "has neither scalars nor tables", id="empty profile"),
        pytest.param("profile: p\nscalars: [\n", 3, "YAML syntax error", id="broken YAML"),
        pytest.param("profile: p\nscalars:\n  sys:\n    measurement: device\n    objects:\n"
                     "      1.3.6.1.2.1.1.3: {field: poll_ms, type: timeticks}  # sysUpTime\n",
                     6, "is set by the poller", id="reserved device field"),
    ],
)
def test_loader_errors_name_file_line_and_key(tmp_path: Path, text: str, line: int,
                                              needle: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_profiles([tmp_path])
    messages = [str(i) for i in err.value.issues]
    hits = [m for m in messages if needle in m]
    assert hits, messages
    assert any(m.startswith(f"{path}:{line}:") for m in hits), messages


def test_loader_reports_every_problem_of_every_file(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(GOOD_TABLE.replace("profile: p", "profile: a")
                                     .replace("index:", "idx:"))
    (tmp_path / "b.yaml").write_text(GOOD_TABLE.replace("profile: p", "profile: b")
                                     .replace("counter32", "counter"))
    with pytest.raises(ConfigError) as err:
        load_profiles([tmp_path])
    files = {Path(i.file).name for i in err.value.issues}
    assert files == {"a.yaml", "b.yaml"}


def test_good_table_loads(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(GOOD_TABLE)
    (table,) = load_profiles([tmp_path])["p"].tables
    assert [s.rate for s in table.rate_specs] == ["in_errors_ps"]


def _profiles() -> dict[str, Profile]:
    return load_profiles()


def test_resolve_unknown_profile_names_the_device() -> None:
    with pytest.raises(ConfigError) as err:
        resolve(("system", "lldp-typo"), _profiles(), where="devices[3].profile", file="s.yaml")
    (issue,) = err.value.issues
    assert issue.file == "s.yaml" and issue.field == "devices[3].profile"
    assert "unknown profile 'lldp-typo'" in issue.message and "if_mib" in issue.message


def test_resolve_group_defined_twice(tmp_path: Path) -> None:
    (tmp_path / "dup.yaml").write_text(
        "profile: dup\nscalars:\n  system:\n    measurement: device\n    objects:\n"
        "      1.3.6.1.2.1.1.5: {field: name2, type: string}  # sysName\n")
    profiles = load_profiles([PROFILE_DIR, tmp_path])
    with pytest.raises(ConfigError, match="both define 'system'"):
        resolve(("system", "dup"), profiles, where="devices[0].profile")


def test_build_sources_rejects_an_unknown_profile() -> None:
    dev = Device(name="sw", host="127.0.0.1", role="switch", profiles=("system", "nope"),
                 snmp=SnmpCredentials(version="2c", community=Secret("x")))
    site = Site(id="s", name="S", tenant="t", uplink=None, agent=AgentSettings(),
                devices=(dev,), source="site-configs/t/s.yaml")
    with pytest.raises(ConfigError, match=r"site-configs/t/s.yaml: devices\[0\].profile: "
                                          r"unknown profile 'nope'"):
        build_sources(site)


# --- detection of WLAN controllers, on identities real devices report ----------------

# (sysObjectID, sysDescr) → rule. Real: seen in LibreNMS' device recordings
# (tests/snmpsim/<name>.snmprec) or in the shared dumps; written: the form a family
# uses with another model, or only the id the vendor's products MIB assigns.
REAL_C9800 = ("Cisco IOS Software [Cupertino], C9800 Software (C9800_IOSXE-K9), Version "
              "17.9.4, RELEASE SOFTWARE (fc5)\r\nTechnical Support: "
              "http://www.cisco.com/techsupport")


@pytest.mark.parametrize(
    ("object_id", "descr", "rule"),
    [
        pytest.param("1.3.6.1.4.1.25053.3.1.5.15", "Ruckus Wireless ZD1200", "ruckus_zd",
                     id="real ZD1200 (ruckuswireless)"),
        pytest.param("1.3.6.1.4.1.25053.3.1.5.1", "", "ruckus_zd",
                     id="ZD1000 by RUCKUS-PRODUCTS-MIB id"),
        pytest.param("1.3.6.1.4.1.25053.3.1.5.20", "Ruckus Wireless T300", "ruckus_unleashed",
                     id="real Unleashed T300 (ruckuswireless-unleashed)"),
        # Unleashed up to 200.14 answers the ZD1200's id; its sysDescr names the AP.
        pytest.param("1.3.6.1.4.1.25053.3.1.5.15", "Ruckus Wireless R510", "ruckus_unleashed",
                     id="old Unleashed on the ZD1200 id (written)"),
        pytest.param("1.3.6.1.4.1.25053.3.1.11.1", "SmartZone", "ruckus",
                     id="real SmartZone SZ104 (ruckuswireless-sz)"),
        pytest.param("1.3.6.1.4.1.9.1.2861", REAL_C9800, "cisco_9800",
                     id="real C9800 (iosxe_c9800)"),
        pytest.param("1.3.6.1.4.1.9.1.2391", "", "cisco_9800",
                     id="C9800-CL by object id alone"),
        pytest.param("1.3.6.1.4.1.9.1.1069", "Cisco Controller", "cisco_wlc",
                     id="real AireOS WLC (ciscowlc)"),
        pytest.param("1.3.6.1.4.1.9.1.617", "Cisco IOS Software, C3560 Software", "cisco_ios",
                     id="IOS switch is no 9800"),
        pytest.param("1.3.6.1.4.1.2356.600.6.310",
                     "LANCOM L-310agn Wireless 8.60.0189 / 02.04.2012 111211800199", "lancom",
                     id="real LCOS L-310agn (lcos)"),
    ],
)
def test_detection_of_wlan_controllers(object_id: str, descr: str, rule: str) -> None:
    found = detect(load_rules(), object_id, descr)
    assert found.rule is not None and found.rule.name == rule


def test_lancom_devices_get_both_lcos_and_lx_profiles() -> None:
    # No public identity tells LCOS from LCOS LX (nor a WLC from an AP): all three profiles,
    # each on its own MIB subtree, with no table name shared.
    found = detect(load_rules(), "1.3.6.1.4.1.2356.600.6.310", "LANCOM L-310agn Wireless")
    assert found.profiles == ("system", "if_mib", "lancom_lx", "lancom_lcos", "lancom_wlc",
                              "lldp")
    names = ("lancom_lx", "lancom_lcos", "lancom_wlc")
    tables = [{t.name for t in _profiles()[p].tables} for p in names]
    assert sum(len(t) for t in tables) == len(set().union(*tables))


# --- detection of switch families (issue 5) ------------------------------------------

SWITCH = ("system", "if_mib", "entity_sensor", "poe", "lldp")


@pytest.mark.parametrize(
    ("object_id", "descr", "rule"),
    [
        # LANCOM LCOS SX 3: a public capture note of a real GS-2326+ (sysObjectID, sysDescr).
        pytest.param("1.3.6.1.4.1.2356.800.3.2329",
                     "LANCOM GS-2326+ 3.34.0326 / 19.08.2024 4005284520000039",
                     "lancom_switch", id="real LANCOM GS-2326+ (LCOS SX 3)"),
        # LibreNMS Lcossx3.php names 2356.800.3.2327 (GS-23xx) as its example id.
        pytest.param("1.3.6.1.4.1.2356.800.3.2327", "", "lancom_switch",
                     id="GS-23xx by object id alone"),
        pytest.param("", "LANCOM GS-3152XP 4.30.0075", "lancom_switch",
                     id="LCOS SX 4 by model name (written)"),
        # UniFi / EdgeSwitch: LibreNMS edgeswitch.snmprec, PRs #12167 and #10515.
        pytest.param("1.3.6.1.4.1.4413", "EdgeSwitch 24-Port 250W, 1.0.1.4720839, "
                     "Linux 3.6.5-f4a26ed5", "unifi_switch", id="real EdgeSwitch (edgeswitch)"),
        pytest.param("1.3.6.1.4.1.4413", "US-16-150W, 5.37.2.12269, Linux 3.6.5",
                     "unifi_switch", id="real UniFi US-16-150W"),
        pytest.param("1.3.6.1.4.1.4413", "UBNT US48PRO - 48 GE POE + 4 XE, 4.0.19.9951, "
                     "Linux 3.6.5", "unifi_switch", id="real UniFi US-48 Pro"),
        pytest.param("1.3.6.1.4.1.41112", "USW-5-Flex, develop.10723", "unifi_switch",
                     id="real USW-Flex on the UniFi enterprise id"),
        pytest.param("1.3.6.1.4.1.8072.3.2.10",
                     "Linux UBNT 4.9.65 #0 Thu Aug 30 12:10:54 2018 mips", "unifi_switch",
                     id="real gen2 USW on net-snmp's id"),
        # HPE: the shared procurve dump, snmpsim-data's 6120XG, LibreNMS arubaos-cx.
        pytest.param("1.3.6.1.4.1.11.2.3.7.8.5.2", "HP Stack, revision KA.15.03.3004, "
                     "ROM KA.15.05 (/sw/code/build/tam(KA_15_03))", "hpe_aruba_switch",
                     id="real HP 5406Rzl2 (procurve)"),
        pytest.param("1.3.6.1.4.1.11.2.3.7.11.107", "ProCurve 516733-B21 6120XG Blade "
                     "Switch, revision Z.14.31", "hpe_aruba_switch",
                     id="real ProCurve 6120XG (snmpsim-data)"),
        pytest.param("1.3.6.1.4.1.47196.4.1.1.1.50", "Aruba JL635A 8325 GL.10.04.2000",
                     "hpe_aruba_switch", id="real Aruba CX 8325 (arubaos-cx)"),
        # Zyxel: LibreNMS zynos.snmprec (two versions).
        pytest.param("1.3.6.1.4.1.890.1.15", "XGS4600-32F", "zyxel", id="real Zyxel XGS4600"),
        pytest.param("1.3.6.1.4.1.890.1.15", "GS1900-8", "zyxel", id="real Zyxel GS1900-8"),
    ],
)
def test_detection_of_switch_families(object_id: str, descr: str, rule: str) -> None:
    found = detect(load_rules(), object_id, descr)
    assert found.rule is not None and found.rule.name == rule
    assert found.rule.role == "switch"
    assert found.profiles == SWITCH


@pytest.mark.parametrize(
    ("object_id", "descr", "rule"),
    [
        # The vendors' WLAN devices still get their WLAN rules, not the new switch rules.
        pytest.param("1.3.6.1.4.1.2356.600.6.310",
                     "LANCOM L-310agn Wireless 8.60.0189 / 02.04.2012 111211800199", "lancom",
                     id="real LCOS AP stays lancom"),
        pytest.param("1.3.6.1.4.1.10002.1", "Linux 3.3.8 #1 Wed Jan 18 09:26:53 PST 2017 mips",
                     "unifi_ap", id="real UAP stays unifi_ap"),
        pytest.param("1.3.6.1.4.1.41112.1.4", "Linux 2.6.32.61 #1 Wed May 21 18:37:41 EEST "
                     "2014 mips", "ubiquiti", id="real airMAX M5 stays ubiquiti"),
        pytest.param("1.3.6.1.4.1.14823.1.2.125", "AOS-10 (MODEL: 635), Version "
                     "10.7.1.0-10.7.1.0 SSR", "aruba_instant", id="real AOS-10 AP stays aruba"),
        # A host name that starts like a UniFi model is no UniFi switch (LibreNMS #15784).
        pytest.param("1.3.6.1.4.1.8072.3.2.10", "US-BOSTON-FW01", "net_snmp",
                     id="US- site name is no switch"),
    ],
)
def test_switch_rules_leave_wlan_devices_alone(object_id: str, descr: str, rule: str) -> None:
    found = detect(load_rules(), object_id, descr)
    assert found.rule is not None and found.rule.name == rule
