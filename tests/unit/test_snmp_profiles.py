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
    # No public identity tells LCOS from LCOS LX: both profiles, each on its own MIB.
    found = detect(load_rules(), "1.3.6.1.4.1.2356.600.6.310", "LANCOM L-310agn Wireless")
    assert found.profiles == ("system", "if_mib", "lancom_lx", "lancom_lcos", "lldp")
    tables = {p: {t.name for t in _profiles()[p].tables} for p in ("lancom_lx", "lancom_lcos")}
    assert not tables["lancom_lx"] & tables["lancom_lcos"]
