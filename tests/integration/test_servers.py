"""The launchers start real servers that answer, and stop exactly what they started."""

from __future__ import annotations

import socket
import time
import urllib.request
from pathlib import Path

import pytest

from schoolnet.sim.servers import (
    Mosquitto,
    Snmpsim,
    VictoriaMetrics,
    free_port,
    snmpsim_data_file,
    wait_for,
)
from tests.conftest import loopback_address

pytestmark = pytest.mark.integration


def test_victoria_metrics_accepts_line_protocol_and_keeps_it_across_restart(
    tmp_path: Path,
) -> None:
    db = VictoriaMetrics(tmp_path)
    sel = '{__name__="interface_in_octets",site="s1"}'
    with db:
        body = b"interface,tenant=t1,site=s1,device=sw in_octets=42i %d\n" % time.time_ns()
        req = urllib.request.Request(f"{db.url}/api/v2/write?bucket=x", data=body, method="POST")
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.status == 204
        wait_for(lambda: bool(db.export(sel)), 15, "the point to become searchable")
        db.stop()
        assert not db.running
        db.start()
        series = db.export(sel)
        assert [s["values"] for s in series] == [[42]]
        assert series[0]["metric"]["device"] == "sw"
        db.kill()
        assert not db.running


def test_mosquitto_listens_and_stops(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path)
    with broker:
        with socket.create_connection((broker.host, broker.port), timeout=2):
            pass
        pid = broker.pid
        assert pid is not None
    with pytest.raises(OSError):
        socket.create_connection((broker.host, broker.port), timeout=1)


def test_snmpsim_serves_each_recording_under_its_community(tmp_path: Path) -> None:
    import asyncio

    from pysnmp.hlapi.v3arch.asyncio import (
        CommunityData,
        ContextData,
        ObjectIdentity,
        ObjectType,
        SnmpEngine,
        UdpTransportTarget,
        get_cmd,
    )

    addr = loopback_address()
    port = free_port(addr, socket.SOCK_DGRAM)
    sim = Snmpsim(tmp_path, {
        "mini": "1.3.6.1.2.1.1.5.0|4|mini-switch\n",
        "c3560": snmpsim_data_file("network/switch/cisco-c3560"),
    }, [(addr, port)])

    async def get(community: str) -> str:
        engine = SnmpEngine()
        target = await UdpTransportTarget.create((addr, port), timeout=2, retries=1)
        sys_name = ObjectType(ObjectIdentity("1.3.6.1.2.1.1.5.0"))
        err, status, _, vbs = await get_cmd(engine, CommunityData(community), target,
                                            ContextData(), sys_name, lookupMib=False)
        engine.close_dispatcher()
        assert not err and not status
        return str(vbs[0][1])

    with sim:
        assert asyncio.run(get("mini")) == "mini-switch"
        assert asyncio.run(get("c3560")) == "DUMSYS-04"
