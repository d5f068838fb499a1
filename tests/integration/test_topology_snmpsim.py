"""``schoolnet topology --poll`` / ``config suggest-parents --poll`` against snmpsim.

A 3-device site written for this test (tests/data/snmprec/topo-*.snmprec, see the README
there): the core switch sees the access switch (Gi0/5), the AP (Gi0/7) and an IP phone
that is not in the inventory (Gi0/9); the access switch sees the core; the AP has no
LLDP-MIB. One snmpsim on a loopback address and a free port; the real poller (pysnmp)
with the ``lldp`` profile; the inventory is a site-configs/ directory written here.
"""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from schoolnet.sim.servers import Snmpsim, free_port
from schoolnet.topology_cli import run
from tests.conftest import loopback_address

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[1] / "data" / "snmprec"


@pytest.fixture(scope="module")
def site_configs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    host = loopback_address()
    port = free_port(host, socket.SOCK_DGRAM)
    work = tmp_path_factory.mktemp("topology")
    sim = Snmpsim(work, {name: DATA / f"{name}.snmprec"
                         for name in ("topo-core", "topo-access", "topo-ap")}, [(host, port)])
    root = work / "site-configs" / "t1"
    root.mkdir(parents=True)
    (root / "tenant.yaml").write_text("tenant: t1\nname: T1\n")
    # One snmpsim serves all three recordings, told apart by community; the devices
    # share host and port, so matching LLDP remotes to them goes by name.
    devices = "".join(
        f"  - name: {name}\n    host: {host}\n    port: {port}\n    role: {role}\n"
        f"    snmp: {{version: 2c, community: {community}, timeout_s: 2, retries: 1}}\n"
        for name, role, community in (("core-sw", "switch", "topo-core"),
                                      ("access-sw", "switch", "topo-access"),
                                      ("ap-101", "ap", "topo-ap")))
    (root / "gy-topo.yaml").write_text(
        "site: gy-topo\nname: Topo\nagent:\n  broker: {host: 127.0.0.1}\n"
        f"devices:\n{devices}")
    with sim:
        yield work / "site-configs"


def call(what: str, site_configs: Path) -> str:
    out = io.StringIO()
    assert run(what, site_id="gy-topo", site_configs=str(site_configs), poll=True,
               out=out) == 0
    return out.getvalue()


def test_tree_from_one_poll(site_configs: Path) -> None:
    assert call("tree", site_configs).splitlines() == [
        "core-sw",
        "├── Gi0/5 → access-sw (1)",
        "├── Gi0/7 → ap-101 (70:3a:0e:c9:c2:46)",
        "└── Gi0/9 → SEP001122334455 (Port 1) [not in inventory]",
    ]


def test_suggested_parents_from_one_poll(site_configs: Path) -> None:
    assert call("parents", site_configs).splitlines() == [
        "- name: access-sw",
        "  parent: core-sw  # seen on core-sw Gi0/5 (its 1)",
        "- name: ap-101",
        "  parent: core-sw  # seen on core-sw Gi0/7 (its 70:3a:0e:c9:c2:46)",
        "# not in the inventory: SEP001122334455 on core-sw Gi0/9",
    ]
