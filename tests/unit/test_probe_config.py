"""The ``probes:`` section: tenant defaults, strict checks, lesson-hour guard at load time."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import pytest

from schoolnet.configfile import ConfigError
from schoolnet.inventory import load_inventory, load_site

TENANT = """\
tenant: herne
name: Stadt Herne
alerting:
  lesson_hours: "07:30-16:00"
defaults:
  snmp: {version: 2c, community: public}
  probes:
    icmp: {count: 10, spacing_ms: 50}
    targets:
      - {name: noc, host: 198.51.100.10, kind: noc}
      - {name: anchor, host: 203.0.113.1, kind: anchor}
    dns: {resolvers: [192.0.2.53]}
    throughput: {server: 198.51.100.20, duration_s: 5}
"""

SITE = """\
site: gs-park
name: Grundschule Am Park
uplink: {kind: dsl, down_mbit: 50, up_mbit: 10, device: router, interface: eth0}
devices:
  - {name: router, host: 127.0.0.1, role: router}
probes:
  services:
    - {name: schulserver, url: "https://schulserver.example.org/"}
    - {name: mdm, tcp: "mdm.example.org:443"}
PROBES_EXTRA
"""


def write(tmp_path: Path, extra: str = "", tenant: str = TENANT, site: str = SITE) -> Path:
    d = tmp_path / "site-configs" / "herne"
    d.mkdir(parents=True)
    (d / "tenant.yaml").write_text(tenant)
    body = site.replace("PROBES_EXTRA", textwrap.indent(extra, "  ") if extra else "")
    (d / "gs-park.yaml").write_text(body)
    return d / "gs-park.yaml"


def test_tenant_defaults_are_merged_under_the_site(tmp_path: Path) -> None:
    site = load_site(write(tmp_path, "icmp: {count: 30}\n"))
    p = site.probes
    assert p is not None
    assert p.icmp.count == 30 and p.icmp.spacing_ms == 50.0  # deep merge
    assert [t.name for t in p.targets] == ["noc", "anchor"]
    assert [(s.name, s.host, s.port, s.tls) for s in p.services] == [
        ("schulserver", "schulserver.example.org", 443, True),
        ("mdm", "mdm.example.org", 443, False)]
    # DNS names default to the services' host names.
    assert p.dns is not None and p.dns.names == ("schulserver.example.org", "mdm.example.org")
    t = p.throughput
    assert t is not None and t.server == "198.51.100.20" and t.duration_s == 5.0
    assert t.schedule == (dt.time(6, 30), dt.time(17, 0))
    assert site.alerting.lesson_start == dt.time(7, 30)


def test_a_site_list_replaces_the_tenant_list(tmp_path: Path) -> None:
    site = load_site(write(tmp_path, "targets: [{name: gw, host: 192.0.2.1, kind: gateway}]\n"))
    assert site.probes is not None
    assert [(t.name, t.kind) for t in site.probes.targets] == [("gw", "gateway")]


def test_no_probes_section_means_no_probes(tmp_path: Path) -> None:
    tenant = TENANT.split("  probes:")[0]
    site = SITE.split("probes:")[0]
    assert load_site(write(tmp_path, tenant=tenant, site=site)).probes is None


@pytest.mark.parametrize(("extra", "message"), [
    ("interval: 60\n", "probes.interval: unknown key"),
    ("targets: [{name: x, host: 192.0.2.1, kind: moon}]\n", "probes.targets[0].kind: must be one of"),
    ("targets: [{name: x, host: 192.0.2.1}, {name: x, host: 192.0.2.2}]\n", "duplicate target name"),
    ("targets: [{name: x, host: 'not a host'}]\n", "is not a valid IP address or host name"),
    ("services: [{name: a, url: 'https://a.example.org/', tcp: 'a.example.org:443'}]\n",
     "give exactly one of url: or tcp:"),
    ("services: [{name: a, url: 'ftp://a.example.org/'}]\n", "is not an http:// or https:// URL"),
    ("services: [{name: a, tcp: 'a.example.org'}]\n", "is not host:port"),
    ("icmp: {spacing_ms: 1}\n", "probes.icmp.spacing_ms: must be between 5 and"),
    ("icmp: {count: 1000, spacing_ms: 100}\n", "more than 90 % of the 60 s interval"),
    ("dns: {resolvers: []}\n", "probes.dns.resolvers: is required"),
    ("dns: {record: MX}\n", "probes.dns.record: must be one of A, AAAA"),
    ("throughput: {duration_s: 600}\n", "probes.throughput.duration_s: must be between 1 and 60"),
    ("throughput: {directions: [sideways]}\n", "must be down and/or up"),
    ("throughput: {schedule: ['25:00']}\n", "is not a time (HH:MM)"),
    ("throughput: {schedule: ['09:00']}\n", "reaches into the tenant's lesson hours 07:30-16:00"),
    # 06:30 + 60 min spread + 20 min of retries + the tests: into lessons.
    ("throughput: {spread_min: 60}\n", "06:30 (+80 min spread/retries) reaches into"),
])
def test_mistakes_name_file_line_and_field(tmp_path: Path, extra: str, message: str) -> None:
    path = write(tmp_path, extra)
    with pytest.raises(ConfigError) as err:
        load_site(path)
    assert message in str(err.value)
    assert "gs-park.yaml:" in str(err.value) or "tenant.yaml:" in str(err.value)


def test_throughput_needs_the_contract(tmp_path: Path) -> None:
    site = SITE.replace("uplink: {kind: dsl, down_mbit: 50, up_mbit: 10, device: router, "
                        "interface: eth0}\n", "")
    with pytest.raises(ConfigError, match=r"probes.throughput: needs the site's uplink"):
        load_site(write(tmp_path, site=site))


def test_the_lesson_hour_check_follows_the_tenant_calendar(tmp_path: Path) -> None:
    # A tenant whose lessons start at 09:00 may test at 07:45.
    tenant = TENANT.replace('"07:30-16:00"', '"09:00-16:00"')
    site = load_site(write(tmp_path, "throughput: {schedule: ['07:45']}\n", tenant=tenant))
    assert site.probes is not None and site.probes.throughput is not None
    assert site.probes.throughput.schedule == (dt.time(7, 45),)


def test_the_whole_inventory_loads_probes_too(tmp_path: Path) -> None:
    write(tmp_path)
    inv = load_inventory(tmp_path / "site-configs")
    site = inv.site("herne", "gs-park")
    assert site is not None and site.probes is not None and len(site.probes.targets) == 2
