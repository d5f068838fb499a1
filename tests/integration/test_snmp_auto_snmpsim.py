"""profile: auto and `schoolnet agent discover` against snmpsim on loopback (real UDP).

Serves two real recordings from ../shared/snmp-dumps (skips where absent): the Aruba
Instant AP cluster and the MikroTik RouterOS box.
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
from schoolnet.wire import Point
from tests.conftest import loopback_address, shared_dump

pytestmark = pytest.mark.integration


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
