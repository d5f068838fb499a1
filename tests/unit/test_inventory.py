"""Strict inventory loading: every mistake named by file, line and field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from schoolnet.cli import main
from schoolnet.configfile import ConfigError
from schoolnet.inventory import load_inventory, load_site

TENANT = """\
tenant: herne
name: Stadt Herne
defaults:
  agent:
    poll_interval_s: 30
    broker: {host: 127.0.0.1, port: 1883}
  snmp:
    version: 2c
    community: {env: TEST_SNMP_COMMUNITY}
"""

SITE = """\
site: gs-park
name: Grundschule Am Park
uplink:
  kind: dsl
  down_mbit: 100
  up_mbit: 40
  device: router
  interface: eth0
agent:
  poll_interval_s: 10
devices:
  - name: router
    host: 127.0.0.1
    role: router
  - name: sw1
    host: 127.0.0.2
    role: switch
    parent: router
    vendor: cisco
    profile: [system, if_mib]
  - name: wlc
    host: wlc.school.example
    role: controller
    parent: sw1
    snmp:
      version: 3
      user: monitor
      auth_protocol: sha256
      auth_key: {file: KEYFILE}
      priv_protocol: aes
      priv_key: inline-priv-key
"""


def write_tree(tmp_path: Path, site: str = SITE, tenant: str = TENANT) -> Path:
    root = tmp_path / "site-configs"
    (root / "herne").mkdir(parents=True)
    (root / "herne" / "tenant.yaml").write_text(tenant)
    keyfile = tmp_path / "auth.key"
    keyfile.write_text("file-auth-key\n")
    (root / "herne" / "gs-park.yaml").write_text(site.replace("KEYFILE", str(keyfile)))
    return root


@pytest.fixture(autouse=True)
def community(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_SNMP_COMMUNITY", "s3cret-community")


def test_a_valid_tree_loads_with_defaults_merged_and_secrets_resolved(tmp_path: Path) -> None:
    inv = load_inventory(write_tree(tmp_path))
    site = inv.site("herne", "gs-park")
    assert site is not None
    assert site.agent.poll_interval_s == 10  # the site's own value wins
    assert site.agent.broker.port == 1883  # the tenant default fills in
    router, sw1, wlc = site.devices
    assert router.snmp.community is not None
    assert router.snmp.community.reveal() == "s3cret-community"
    assert sw1.parent == "router" and sw1.vendor == "cisco"
    assert wlc.snmp.version == "3" and wlc.snmp.community is None  # not merged with v2c
    assert wlc.snmp.auth_key is not None and wlc.snmp.auth_key.reveal() == "file-auth-key"
    assert site.uplink is not None and site.uplink.down_mbit == 100.0


def test_secrets_never_show_in_repr(tmp_path: Path) -> None:
    site = load_site(write_tree(tmp_path) / "herne" / "gs-park.yaml")
    text = repr(site)
    assert "s3cret-community" not in text and "inline-priv-key" not in text
    assert "file-auth-key" not in text
    assert "env:TEST_SNMP_COMMUNITY" in text  # where it came from is not secret


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("    role: router\n", "    role: router\n    colour: red\n", ":15: devices[0].colour: unknown key"),
        ("    host: 127.0.0.2\n", "    host: 300.1.2.3\n", ":16: devices[1].host: '300.1.2.3' is not a valid IP"),
        ("      user: monitor\n", "", ":26: devices[2].snmp.user: is required"),
        ("      priv_key: inline-priv-key\n", "", ":26: devices[2].snmp.priv_key: is required"),
        ("  down_mbit: 100\n", "  down_mbit: fast\n", ":5: uplink.down_mbit: must be a number"),
        ("    role: router\n", "    role: toaster\n", ":14: devices[0].role: must be one of"),
        ("    parent: sw1\n", "    parent: nope\n", "devices[2].parent: no device 'nope' here"),
        ("  - name: wlc\n", "  - name: sw1\n", "devices[2].name: duplicate device name 'sw1'"),
        ("  poll_interval_s: 10\n", "  poll_interval_s: yes\n", ":10: agent.poll_interval_s: must be"),
        ("site: gs-park\n", "site: gs-parc\n", ":1: site: must match the file name"),
        ("  kind: dsl\n", "  kind: dsl\n  kind: lte\n", ":5: uplink.kind: duplicate key"),
    ],
)
def test_each_mistake_names_file_line_and_field(tmp_path: Path, old: str, new: str,
                                                expected: str) -> None:
    assert old in SITE
    root = write_tree(tmp_path, SITE.replace(old, new, 1))
    with pytest.raises(ConfigError) as exc:
        load_inventory(root)
    messages = [str(i) for i in exc.value.issues]
    # Exactly one issue: a broken device must not cascade into "no such parent" errors.
    assert len(messages) == 1, messages
    assert expected in messages[0] and "herne/gs-park.yaml" in messages[0], messages


def test_a_missing_environment_secret_names_where_it_is_referenced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TEST_SNMP_COMMUNITY")
    with pytest.raises(ConfigError) as exc:
        load_inventory(write_tree(tmp_path))
    # Two devices use the tenant default: one issue, at the tenant file's line.
    assert [str(i).split("/")[-1] for i in exc.value.issues] == [
        "tenant.yaml:9: devices[0].snmp.community: environment variable "
        "TEST_SNMP_COMMUNITY is not set"
    ]
    # The collector checks references without reading them.
    assert load_inventory(write_tree(tmp_path / "b"), resolve_secrets=False).sites


def test_yaml_syntax_errors_name_the_line(tmp_path: Path) -> None:
    root = write_tree(tmp_path, SITE.replace("  kind: dsl\n", "  kind: [dsl\n"))
    with pytest.raises(ConfigError, match=r"gs-park.yaml:\d+: YAML syntax error"):
        load_inventory(root)


def test_config_check_reports_every_error_in_one_run(tmp_path: Path) -> None:
    bad = (SITE.replace("    role: router\n", "    role: router\n    colour: red\n")
           .replace("    host: 127.0.0.2\n", "    host: 10.0.0.256\n"))
    root = write_tree(tmp_path, bad)
    result = CliRunner().invoke(main, ["config", "check", str(root)])
    assert result.exit_code == 1
    assert "devices[0].colour: unknown key" in result.output
    assert "devices[1].host: '10.0.0.256' is not a valid IP" in result.output
    assert "2 error(s)" in result.output
    assert "s3cret-community" not in result.output


def test_config_check_accepts_the_shipped_inventory(monkeypatch: pytest.MonkeyPatch) -> None:
    root = Path(__file__).resolve().parents[2] / "site-configs"
    result = CliRunner().invoke(main, ["config", "check", "--no-secrets", str(root)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok: ")


def test_tenant_file_mistakes_are_reported_too(tmp_path: Path) -> None:
    tenant = TENANT.replace("name: Stadt Herne\n", "name: Stadt Herne\nrecipients: 5\n")
    root = write_tree(tmp_path, tenant=textwrap.dedent(tenant))
    with pytest.raises(ConfigError, match=r"tenant.yaml:3: recipients: unknown key"):
        load_inventory(root)
