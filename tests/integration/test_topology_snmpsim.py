"""The LLDP topology against snmpsim: the commands' ``--poll``, and the agent's
``topology`` points end to end.

A 3-device site written for this test (tests/data/snmprec/topo-*.snmprec, see the README
there): the core switch sees the access switch (Gi0/5), the AP (Gi0/7) and an IP phone
that is not in the inventory (Gi0/9); the access switch sees the core; the AP has no
LLDP-MIB. One snmpsim on a loopback address and a free port; the real poller (pysnmp)
with the ``lldp`` profile; the inventory is a site-configs/ directory written here, for
a tenant of this module only (the broker and database are the session's).
"""

from __future__ import annotations

import asyncio
import io
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.app import EXIT_OK, Agent, default_sources
from agent.spool import DiskSpool
from collector.config import (
    CollectorConfig,
    HttpSettings,
    InfluxSettings,
    MqttSettings,
    SpoolSettings,
)
from schoolnet.inventory import load_site
from schoolnet.sim.servers import Mosquitto, Snmpsim, VictoriaMetrics, free_port
from schoolnet.topology_cli import run
from tests.conftest import loopback_address
from tests.security_support import eventually, running_collector

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parents[1] / "data" / "snmprec"
SITE = "gy-topo"


@dataclass(frozen=True)
class TopoSite:
    """The written site-configs/ directory and its tenant."""

    root: Path
    tenant: str

    @property
    def site_file(self) -> Path:
        """The site's YAML file."""
        return self.root / self.tenant / f"{SITE}.yaml"


@pytest.fixture(scope="module")
def topo(tmp_path_factory: pytest.TempPathFactory, mosquitto: Mosquitto) -> Iterator[TopoSite]:
    host = loopback_address()
    port = free_port(host, socket.SOCK_DGRAM)
    work = tmp_path_factory.mktemp("topology")
    sim = Snmpsim(work, {name: DATA / f"{name}.snmprec"
                         for name in ("topo-core", "topo-access", "topo-ap")}, [(host, port)])
    tenant = "t" + uuid.uuid4().hex[:10]
    root = work / "site-configs" / tenant
    root.mkdir(parents=True)
    (root / "tenant.yaml").write_text(f"tenant: {tenant}\nname: T1\n")
    # One snmpsim serves all three recordings, told apart by community; the devices
    # share host and port, so matching LLDP remotes to them goes by name.
    devices = "".join(
        f"  - name: {name}\n    host: {host}\n    port: {port}\n    role: {role}\n"
        f"    profile: [system, lldp]\n"
        f"    snmp: {{version: 2c, community: {community}, timeout_s: 2, retries: 1}}\n"
        for name, role, community in (("core-sw", "switch", "topo-core"),
                                      ("access-sw", "switch", "topo-access"),
                                      ("ap-101", "ap", "topo-ap")))
    (root / f"{SITE}.yaml").write_text(
        f"site: {SITE}\nname: Topo\nagent:\n"
        f"  broker: {{host: {mosquitto.host}, port: {mosquitto.port}}}\n"
        f"devices:\n{devices}")
    with sim:
        yield TopoSite(work / "site-configs", tenant)


def call(what: str, topo: TopoSite) -> str:
    out = io.StringIO()
    assert run(what, site_id=SITE, site_configs=str(topo.root), poll=True, out=out) == 0
    return out.getvalue()


def test_tree_from_one_poll(topo: TopoSite) -> None:
    assert call("tree", topo).splitlines() == [
        "core-sw",
        "├── Gi0/5 → access-sw (1)",
        "├── Gi0/7 → ap-101 (70:3a:0e:c9:c2:46)",
        "└── Gi0/9 → SEP001122334455 (Port 1) [not in inventory]",
    ]


def test_suggested_parents_from_one_poll(topo: TopoSite) -> None:
    assert call("parents", topo).splitlines() == [
        "- name: access-sw",
        "  parent: core-sw  # seen on core-sw Gi0/5 (its 1)",
        "- name: ap-101",
        "  parent: core-sw  # seen on core-sw Gi0/7 (its 70:3a:0e:c9:c2:46)",
        "# not in the inventory: SEP001122334455 on core-sw Gi0/9",
    ]


def test_agent_writes_the_links_as_topology_points_end_to_end(
        topo: TopoSite, mosquitto: Mosquitto, victoria: VictoriaMetrics,
        tmp_path: Path) -> None:
    """The real agent (``--once``: polls, then the derived topology) -> Mosquitto ->
    collector -> VictoriaMetrics: one series per link with the documented tags."""
    cfg = CollectorConfig(
        mqtt=MqttSettings(host=mosquitto.host, port=mosquitto.port,
                          client_id=f"c-{topo.tenant}", tenants=(topo.tenant,),
                          reconnect_min_s=0.1, reconnect_max_s=0.5),
        influx=InfluxSettings(url=victoria.url, flush_interval_s=0.1, retry_min_s=0.05,
                              retry_max_s=0.2),
        inventory=str(topo.root), http=HttpSettings(host="127.0.0.1", port=0),
        spool=SpoolSettings(enabled=False), state_dir=str(tmp_path / "state"))

    def links() -> dict[tuple[str, ...], dict[str, float]]:
        got: dict[tuple[str, ...], dict[str, float]] = {}
        for s in victoria.export(f'{{__name__=~"topology_.+",tenant="{topo.tenant}"}}'):
            m = s["metric"]
            key = tuple(m.get(k, "") for k in ("site", "device", "role", "ifname",
                                                "neighbour", "neighbour_port"))
            got.setdefault(key, {})[m["__name__"].removeprefix("topology_")] = s["values"][-1]
        return got

    async def scenario() -> dict[tuple[str, ...], dict[str, Any]]:
        async with running_collector(cfg):
            site = load_site(topo.site_file)
            with DiskSpool.for_site(tmp_path / "spool", site.tenant, site.id) as spool:
                agent = Agent(site, spool, sources=default_sources(site), once=True,
                              install_signal_handlers=False)
                assert await agent.serve() == EXIT_OK  # every batch reached the broker
            return await eventually(lambda: len(got := links()) == 3 and got,
                                    "three topology series in the database", timeout=30)

    assert asyncio.run(scenario()) == {
        (SITE, "core-sw", "switch", "Gi0/5", "access-sw", "1"):
            {"present": 1, "known": 1, "depth": 1, "parent_link": 1},
        (SITE, "core-sw", "switch", "Gi0/7", "ap-101", "70:3a:0e:c9:c2:46"):
            {"present": 1, "known": 1, "depth": 1, "parent_link": 1},
        (SITE, "core-sw", "switch", "Gi0/9", "SEP001122334455", "Port 1"):
            {"present": 1, "known": 0, "depth": 1, "parent_link": 0},
    }
