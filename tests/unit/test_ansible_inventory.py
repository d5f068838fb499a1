"""`schoolnet ansible-inventory`: one Ansible host per site, straight from site-configs/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from schoolnet.ansible_inventory import build_inventory
from schoolnet.cli import main
from schoolnet.configfile import ConfigError

TENANT = """\
tenant: {tid}
name: Tenant {tid}
defaults:
  ansible: {{user: deploy, port: 2222}}
  snmp: {{version: 2c, community: {{env: NEVER_SET_IN_TESTS}}}}
"""

SITE = """\
site: {sid}
name: School {sid}
{extra}devices:
  - {{name: router, host: 127.0.0.1, role: router}}
"""


def tree(tmp_path: Path, sites: dict[str, dict[str, str]]) -> Path:
    root = tmp_path / "site-configs"
    for tid, by_site in sites.items():
        (root / tid).mkdir(parents=True)
        (root / tid / "tenant.yaml").write_text(TENANT.format(tid=tid))
        for sid, extra in by_site.items():
            (root / tid / f"{sid}.yaml").write_text(SITE.format(sid=sid, extra=extra))
    return root


def test_one_host_per_site_grouped_per_tenant_with_paths_and_connection_vars(tmp_path: Path) -> None:
    root = tree(tmp_path, {
        "herne": {"gy-a": "ansible: {host: 10.20.1.10}\n", "gs-b": ""},
        "bo-west": {"gy-a": "ansible: {host: box.gy-a.example, user: root, port: 22}\n"},
    })
    inv = build_inventory(root)
    assert inv["all"] == {"children": ["sites"]}
    assert inv["sites"] == {"children": ["tenant_bo_west", "tenant_herne"]}
    assert inv["tenant_herne"] == {"hosts": ["gs-b.herne", "gy-a.herne"]}
    assert inv["tenant_bo_west"] == {"hosts": ["gy-a.bo-west"]}
    hv = inv["_meta"]["hostvars"]
    assert hv["gy-a.herne"] == {
        "schoolnet_tenant": "herne", "schoolnet_site": "gy-a", "schoolnet_site_name": "School gy-a",
        "schoolnet_site_config": str((root / "herne" / "gy-a.yaml").resolve()),
        "schoolnet_tenant_config": str((root / "herne" / "tenant.yaml").resolve()),
        "ansible_host": "10.20.1.10", "ansible_user": "deploy", "ansible_port": 2222,
    }
    # No management address: Ansible falls back to the host name; tenant defaults still apply.
    assert "ansible_host" not in hv["gs-b.herne"]
    assert hv["gs-b.herne"]["ansible_user"] == "deploy"
    # The site's own ansible: block wins over the tenant defaults, key by key.
    assert (hv["gy-a.bo-west"]["ansible_user"], hv["gy-a.bo-west"]["ansible_port"]) == ("root", 22)


@pytest.mark.parametrize(("extra", "message"), [
    ("ansible: {host: 'not a host!'}\n", "ansible.host: 'not a host!' is not a valid IP address"),
    ("ansible: {port: 70000}\n", "ansible.port: must be a port number"),
    ("ansible: {hostname: x}\n", "ansible.hostname: unknown key"),
])
def test_a_broken_ansible_block_is_a_config_error_with_file_and_line(
        tmp_path: Path, extra: str, message: str) -> None:
    root = tree(tmp_path, {"herne": {"gy-a": extra}})
    with pytest.raises(ConfigError) as exc:
        build_inventory(root)
    assert any(message in str(i) and "gy-a.yaml:3" in str(i) for i in exc.value.issues), exc.value.issues


def test_tenants_that_collide_as_group_names_are_refused(tmp_path: Path) -> None:
    root = tree(tmp_path, {"a-b": {"s1": ""}, "a_b": {"s2": ""}})
    with pytest.raises(ConfigError, match="both map to the Ansible group 'tenant_a_b'"):
        build_inventory(root)


def test_cli_list_and_host_as_the_script_plugin_calls_them(tmp_path: Path) -> None:
    root = tree(tmp_path, {"herne": {"gy-a": ""}})
    runner = CliRunner()
    res = runner.invoke(main, ["ansible-inventory", "--site-configs", str(root), "--list"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output) == build_inventory(root)
    res = runner.invoke(main, ["ansible-inventory", "--host", "gy-a.herne"],
                        env={"SCHOOLNET_SITE_CONFIGS": str(root)})
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["schoolnet_site"] == "gy-a"
    res = runner.invoke(main, ["ansible-inventory", "--site-configs", str(root), "--host", "x"])
    assert res.exit_code == 1 and "no site 'x'" in res.output


def test_cli_reports_config_errors_and_exits_1(tmp_path: Path) -> None:
    root = tree(tmp_path, {"herne": {"gy-a": "bogus: 1\n"}})
    res = CliRunner().invoke(main, ["ansible-inventory", "--site-configs", str(root)])
    assert res.exit_code == 1
    assert "gy-a.yaml:3: bogus: unknown key" in res.output
