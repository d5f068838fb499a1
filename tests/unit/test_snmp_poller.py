"""The SNMP poller against the in-repo fake agent: varbinds → points, errors, concurrency."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, ParamSpec

import pytest

from agent.snmp import SnmpDeviceSource, build_sources
from agent.snmp.client import Oid, SnmpError, Target, VarBind, parse_oid
from agent.snmp.fake import FakeSnmpClient, parse_snmprec
from schoolnet.configfile import Secret
from schoolnet.inventory import AgentSettings, Device, Site, SnmpCredentials
from schoolnet.wire import Batch, Point, decode_batch, encode_batch

DATA = Path(__file__).resolve().parents[1] / "data" / "snmprec"
RATE_SWITCH = (DATA / "rate-switch.snmprec").read_text()
S = 1_000_000_000
T0 = 1_763_712_000 * S
IF_TABLE: Oid = (1, 3, 6, 1, 2, 1, 2, 2)
HC_IN: Oid = (1, 3, 6, 1, 2, 1, 31, 1, 1, 1, 6)
IF_IN_OCTETS: Oid = (1, 3, 6, 1, 2, 1, 2, 2, 1, 10)


P = ParamSpec("P")


def run(test: Callable[P, Coroutine[Any, Any, None]]) -> Callable[P, None]:
    """Run an async test in a fresh event loop (the suite has no asyncio plugin)."""

    @functools.wraps(test)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        asyncio.run(test(*args, **kwargs))

    return wrapper


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def device(name: str, *, host: str | None = None, vendor: str = "",
           profiles: tuple[str, ...] = ("system", "if_mib"), retries: int = 1) -> Device:
    return Device(name=name, host=host or f"10.0.0.{abs(hash(name)) % 250 + 1}", role="switch",
                  vendor=vendor, profiles=profiles,
                  snmp=SnmpCredentials(version="2c", community=Secret("c"), retries=retries))


def make_site(*devices: Device, concurrency: int = 16) -> Site:
    return Site(id="gy-test", name="Test", tenant="t", uplink=None,
                agent=AgentSettings(snmp_concurrency=concurrency), devices=devices)


def sources(client: FakeSnmpClient, *devices: Device, concurrency: int = 16,
            clock: Clock | None = None) -> list[SnmpDeviceSource]:
    built = build_sources(make_site(*devices, concurrency=concurrency), client=client,
                          clock=clock or Clock())
    assert all(isinstance(s, SnmpDeviceSource) for s in built)
    return [s for s in built if isinstance(s, SnmpDeviceSource)]


def by_measurement(points: Sequence[Point], measurement: str) -> list[Point]:
    return [p for p in points if p.measurement == measurement]


def interfaces(points: Sequence[Point]) -> dict[str, Point]:
    return {p.tags["ifindex"]: p for p in by_measurement(points, "interface")}


def assert_wire_valid(points: Sequence[Point]) -> None:
    """The points pass the contract exactly as the collector will check them."""
    payload = encode_batch(Batch(site="gy-test", seq=1, points=tuple(points)))
    assert len(decode_batch(payload, now_ns=T0).points) == len(points)


@run
async def test_device_and_interface_points_from_a_recording() -> None:
    client = FakeSnmpClient({"10.1.1.1": RATE_SWITCH})
    (src,) = sources(client, device("core-sw", host="10.1.1.1", vendor="cisco"))
    assert src.name == "snmp:core-sw"
    points = await src.collect(T0)
    assert_wire_valid(points)
    dev = points[0]
    assert dev.measurement == "device" and dev.time_ns == T0
    assert dict(dev.tags) == {"device": "core-sw", "role": "switch", "vendor": "cisco"}
    assert dev.fields["reachable"] == 1
    assert type(dev.fields["poll_ms"]) is float
    assert dev.fields["sys_name"] == "rate-sw"
    assert dev.fields["sys_object_id"] == "1.3.6.1.4.1.8072.3.2.10"
    assert dev.fields["uptime_s"] == 3600.0
    ifs = interfaces(points)
    assert {k: p.tags["ifname"] for k, p in ifs.items()} == {
        "1": "Gi0/1", "2": "Te0/2", "3": "port3"}  # port3: ifDescr, it has no ifName
    one, two, three = ifs["1"].fields, ifs["2"].fields, ifs["3"].fields
    assert one["in_octets"] == 10**12  # HC counter preferred ...
    assert two["in_octets"] == 0 and two["out_octets"] == 1000  # ... 32-bit without HC
    assert three["in_octets"] == 777
    assert (one["speed_mbps"], two["speed_mbps"], three["speed_mbps"]) == (1000.0, 10000.0, 100.0)
    assert one["alias"] == "Glasfaser Stadtwerke" and two["alias"] == ""
    assert (one["in_errors"], one["out_errors"], one["in_discards"]) == (42, 7, 5)
    assert (three["admin_status"], three["oper_status"], three["if_type"]) == (2, 2, 6)
    assert not by_measurement(points, "snmp_error")
    # Values received that were asked for: 6 system scalars, 31 in the 13 preferred
    # columns, 12 in the 4 fallback columns port3 needs (ifDescr, ifSpeed, 32-bit octets).
    assert src.stats.varbinds == 6 + 31 + 12


FIELD_TYPES = {
    "in_octets": int, "out_octets": int, "in_errors": int, "out_errors": int,
    "in_discards": int, "out_discards": int, "admin_status": int, "oper_status": int,
    "if_type": int, "speed_mbps": float, "alias": str, "in_bps": float, "out_bps": float,
    "in_errors_ps": float, "out_errors_ps": float, "in_discards_ps": float,
    "out_discards_ps": float,
}


@run
async def test_rates_from_the_second_poll_with_stable_types() -> None:
    clock = Clock()
    data = parse_snmprec(RATE_SWITCH)
    client = FakeSnmpClient({"10.1.1.1": data})
    (src,) = sources(client, device("sw", host="10.1.1.1"), clock=clock)
    first = interfaces(await src.collect(T0))
    assert "in_bps" not in first["1"].fields  # first poll: no rate
    data[(*HC_IN, 1)] = 10**12 + 60 * 1_250_000  # 10 Mbit/s for 60 s
    data[(1, 3, 6, 1, 2, 1, 1, 3, 0)] = 360_000 + 6_000
    client.set_device("10.1.1.1", data)
    clock.now += 60
    second = interfaces(await src.collect(T0 + 60 * S))
    assert second["1"].fields["in_bps"] == pytest.approx(1e7)
    assert second["1"].fields["in_errors_ps"] == 0.0
    for point in (*first.values(), *second.values()):
        for name, value in point.fields.items():
            assert type(value) is FIELD_TYPES[name], (name, value)


@run
async def test_timestamps_include_the_wait_for_a_semaphore_slot() -> None:
    """Rates use when the counters were read, not when the gather was scheduled."""
    clock = Clock()
    client = FakeSnmpClient({"10.1.1.1": RATE_SWITCH})
    (src,) = sources(client, device("sw", host="10.1.1.1"), clock=clock, concurrency=1)
    async with src._limit:  # another device holds the only slot for 2.5 s
        task = asyncio.create_task(src.collect(T0))
        await asyncio.sleep(0)
        clock.now += 2.5
    points = await task
    assert {p.time_ns for p in points} == {T0 + 2_500_000_000}


@run
async def test_fallback_columns_are_walked_only_when_needed() -> None:
    data = parse_snmprec(RATE_SWITCH)
    for oid in list(data):  # keep only interface 1, which has ifName and HC counters
        if oid[:8] in (IF_TABLE, (1, 3, 6, 1, 2, 1, 31, 1)) and oid[-1] != 1:
            del data[oid]
    client = FakeSnmpClient({"10.1.1.1": data})
    (src,) = sources(client, device("sw", host="10.1.1.1"))
    points = await src.collect(T0)
    assert len(interfaces(points)) == 1
    walked = {oid for _, kind, oids in client.requests if kind == "bulk" for oid in oids}
    assert not any(o[: len(IF_IN_OCTETS)] == IF_IN_OCTETS for o in walked)
    # With interface 2 back (no HC counters) the 32-bit columns are read as well.
    client.set_device("10.1.1.1", RATE_SWITCH)
    client.requests.clear()
    await src.collect(T0 + 60 * S)
    walked = {oid for _, kind, oids in client.requests if kind == "bulk" for oid in oids}
    assert any(o[: len(IF_IN_OCTETS)] == IF_IN_OCTETS for o in walked)


@run
async def test_failed_table_gives_snmp_error_and_keeps_the_rest() -> None:
    client = FakeSnmpClient({"10.1.1.1": RATE_SWITCH})
    client.fail_subtree[("10.1.1.1", IF_TABLE)] = SnmpError("gen_err", "genErr (varbind 3)",
                                                            answered=True, index=3)
    (src,) = sources(client, device("sw", host="10.1.1.1"))
    points = await src.collect(T0)
    assert_wire_valid(points)
    assert points[0].fields["reachable"] == 1 and points[0].fields["sys_name"] == "rate-sw"
    assert not interfaces(points)
    (err,) = by_measurement(points, "snmp_error")
    assert dict(err.tags) == {"device": "sw", "role": "switch", "table": "interfaces",
                              "error": "gen_err", "writes": "interface"}
    assert err.fields == {"message": "genErr (varbind 3)", "consecutive_failures": 1}
    # Fixed on the next poll: the counter of consecutive failures starts again.
    del client.fail_subtree[("10.1.1.1", IF_TABLE)]
    assert not by_measurement(await src.collect(T0 + 60 * S), "snmp_error")


@pytest.mark.parametrize(
    ("error", "code"),
    [
        pytest.param(SnmpError("timeout", "No SNMP response received before timeout",
                               answered=False), "timeout", id="timeout"),
        pytest.param(SnmpError("auth_failed", "Wrong SNMP PDU digest", answered=False),
                     "auth_failed", id="wrong v3 key"),
    ],
)
@run
async def test_device_that_does_not_answer(error: SnmpError, code: str) -> None:
    client = FakeSnmpClient({"10.1.1.1": RATE_SWITCH})
    client.fail["10.1.1.1"] = error
    (src,) = sources(client, device("sw", host="10.1.1.1", retries=2))
    for n in (1, 2):
        client.requests.clear()
        points = await src.collect(T0 + n * 60 * S)
        assert_wire_valid(points)
        dev, err = points
        assert set(dev.fields) == {"reachable", "poll_ms"} and dev.fields["reachable"] == 0
        assert err.measurement == "snmp_error"
        assert err.tags["table"] == "system" and err.tags["error"] == code
        assert err.fields["consecutive_failures"] == n
        # One request, then the poll stops; once known down, asked without retries.
        ((target, _, _),) = client.requests
        assert target.retries == (2 if n == 1 else 0)
    del client.fail["10.1.1.1"]
    points = await src.collect(T0 + 180 * S)
    assert points[0].fields["reachable"] == 1 and not by_measurement(points, "snmp_error")
    await src.collect(T0 + 240 * S)  # answered last time: retries again
    assert client.requests[-1][0].retries == 2


@run
async def test_one_stuck_device_does_not_stall_the_others() -> None:
    hosts = ["10.2.0.1", "10.2.0.2", "10.2.0.3"]
    client = FakeSnmpClient({h: RATE_SWITCH for h in hosts})
    client.hold["10.2.0.1"] = asyncio.Event()
    stuck, *healthy = sources(client, *(device(f"d{i}", host=h) for i, h in enumerate(hosts)),
                              concurrency=2)
    stuck_task = asyncio.create_task(stuck.collect(T0))
    tasks = {asyncio.create_task(s.collect(T0)) for s in healthy}
    done, _ = await asyncio.wait(tasks, timeout=10)
    assert done == tasks and not stuck_task.done()
    assert all(t.result()[0].fields["reachable"] == 1 for t in done)
    client.hold["10.2.0.1"].set()
    assert (await stuck_task)[0].fields["reachable"] == 1


@run
async def test_concurrency_is_bounded_by_the_site_setting() -> None:
    hosts = ["10.3.0.1", "10.3.0.2"]
    client = FakeSnmpClient({h: RATE_SWITCH for h in hosts})
    client.hold["10.3.0.1"] = asyncio.Event()
    first, second = sources(client, *(device(f"d{i}", host=h) for i, h in enumerate(hosts)),
                            concurrency=1)
    t1 = asyncio.create_task(first.collect(T0))
    t2 = asyncio.create_task(second.collect(T0))
    for _ in range(20):  # let both tasks run as far as they can
        await asyncio.sleep(0)
    assert {t.host for t, _, _ in client.requests} == {"10.3.0.1"}
    client.hold["10.3.0.1"].set()
    await asyncio.gather(t1, t2)
    assert {t.host for t, _, _ in client.requests} == set(hosts)


@run
async def test_walk_survives_truncated_responses_and_too_big() -> None:
    """snmpsim cuts GETBULK answers at 64 varbinds, net-snmp at its message size."""
    full = await sources(FakeSnmpClient({"h": RATE_SWITCH}, max_varbinds=10_000),
                         device("a", host="h"))[0].collect(T0)

    class TooBig(FakeSnmpClient):
        async def get_bulk(self, target: Target, oids: Sequence[Oid],
                           max_repetitions: int) -> list[VarBind]:
            if max_repetitions > 3:
                raise SnmpError("too_big", "tooBig", answered=True)
            return await super().get_bulk(target, oids, max_repetitions)

    for client in (FakeSnmpClient({"h": RATE_SWITCH}, max_varbinds=5), TooBig({"h": RATE_SWITCH})):
        points = await sources(client, device("a", host="h"))[0].collect(T0)
        assert [(p.tags, p.fields) for p in interfaces(points).values()] == [
            (p.tags, p.fields) for p in interfaces(full).values()]
        assert not by_measurement(points, "snmp_error")


@run
async def test_non_increasing_oid_ends_the_column_with_an_error() -> None:
    class Looping(FakeSnmpClient):
        async def get_bulk(self, target: Target, oids: Sequence[Oid],
                           max_repetitions: int) -> list[VarBind]:
            out = await super().get_bulk(target, oids, max_repetitions)
            return [(oids[0], v) if i == 0 else (o, v) for i, (o, v) in enumerate(out)]

    points = await sources(Looping({"h": RATE_SWITCH}), device("a", host="h"))[0].collect(T0)
    errors = by_measurement(points, "snmp_error")
    assert {e.tags["error"] for e in errors} == {"oid_not_increasing"}
    assert {e.fields["consecutive_failures"] for e in errors} == {1}
    assert len(interfaces(points)) == 3  # the other columns still made the rows


@run
async def test_get_retries_without_an_oid_answered_with_no_such_name() -> None:
    class OldFirmware(FakeSnmpClient):
        async def get(self, target: Target, oids: Sequence[Oid]) -> list[VarBind]:
            contact = parse_oid("1.3.6.1.2.1.1.4.0")
            if contact in oids:
                raise SnmpError("no_such_name", "noSuchName", answered=True,
                                index=list(oids).index(contact) + 1)
            return await super().get(target, oids)

    points = await sources(OldFirmware({"h": RATE_SWITCH}), device("a", host="h"))[0].collect(T0)
    assert points[0].fields["sys_name"] == "rate-sw" and "sys_contact" not in points[0].fields


@run
async def test_limits_long_strings_huge_counters_and_empty_tags() -> None:
    data = parse_snmprec(RATE_SWITCH)
    data[parse_oid("1.3.6.1.2.1.1.1.0")] = b"x" * 5000
    data[parse_oid("1.3.6.1.2.1.31.1.1.1.1.1")] = b"G" * 300 + b"\x00\x00"
    data[parse_oid("1.3.6.1.2.1.31.1.1.1.1.2")] = b"\x00"  # empty ifName: use ifDescr
    data[(*HC_IN, 1)] = 2**64 - 5
    points = await sources(FakeSnmpClient({"h": data}), device("a", host="h"))[0].collect(T0)
    assert_wire_valid(points)
    assert len(points[0].fields["sys_descr"]) == 1024  # type: ignore[arg-type]
    ifs = interfaces(points)
    assert ifs["1"].tags["ifname"] == "G" * 256
    assert ifs["2"].tags["ifname"] == "TenGigabitEthernet0/2"
    assert ifs["1"].fields["in_octets"] == 2**63 - 1
    assert "vendor" not in points[0].tags


@run
async def test_sources_share_one_client_closed_by_the_last() -> None:
    client = FakeSnmpClient()
    a, b = sources(client, device("a"), device("b"))
    await a.close()
    await a.close()  # idempotent: does not count twice
    assert not client.closed
    await b.close()
    assert client.closed
    assert build_sources(make_site(), client=client) == []


def test_every_inventory_usm_protocol_maps_to_pysnmp() -> None:
    from pysnmp.hlapi.v3arch import asyncio as hlapi

    from agent.snmp.client import _AUTH, _PRIV
    from schoolnet.inventory import AUTH_PROTOCOLS, PRIV_PROTOCOLS

    assert set(_AUTH) == set(AUTH_PROTOCOLS) and set(_PRIV) == set(PRIV_PROTOCOLS)
    assert all(hasattr(hlapi, name) for name in (*_AUTH.values(), *_PRIV.values()))


# --- Tables that time out (issue 5): what it got plus a counted error, never nothing ----

SLOW_SWITCH = (DATA / "slow-sensor-switch.snmprec").read_text()
FOUR_TABLES = ("system", "if_mib", "entity_sensor", "poe")  # interfaces, sensors, 2 poe
IF_X: Oid = (1, 3, 6, 1, 2, 1, 31, 1, 1, 1)  # the interfaces walk starts with ifName
# IF_TABLE (ifType, ifAdminStatus …) is walked by the interfaces table only; ifName also
# by the PoE table (a lookup).
SENSORS: Oid = (1, 3, 6, 1, 2, 1, 99, 1, 1, 1)
POE_PORTS: Oid = (1, 3, 6, 1, 2, 1, 105, 1, 1, 1)
TIMEOUT = SnmpError("timeout", "No SNMP response received before timeout", answered=False)


def errors(points: Sequence[Point]) -> list[tuple[str, str]]:
    return [(p.tags["table"], p.tags["error"]) for p in by_measurement(points, "snmp_error")]


def retries_below(client: FakeSnmpClient, subtree: Oid) -> set[int]:
    """The ``retries`` of the requests that asked below ``subtree``."""
    return {t.retries for t, _, oids in client.requests
            if any(o[: len(subtree)] == subtree for o in oids)}


def slow_switch(*, retries: int = 1, dropped: bool = True,
                profiles: tuple[str, ...] = FOUR_TABLES) -> tuple[FakeSnmpClient, SnmpDeviceSource]:
    """The slow-sensor-switch recording; ``dropped=False`` serves the sensors as well."""
    client = FakeSnmpClient({"h": SLOW_SWITCH if dropped else parse_snmprec(SLOW_SWITCH)})
    (src,) = sources(client, device("sw", host="h", profiles=profiles, retries=retries))
    return client, src


@run
async def test_table_two_of_four_times_out_and_the_others_are_kept() -> None:
    client, src = slow_switch()
    assert [t.name for t in src.tables] == ["interfaces", "sensors", "poe_ports", "poe_budget"]
    points = await src.collect(T0)
    assert_wire_valid(points)
    assert points[0].fields["reachable"] == 1 and points[0].fields["sys_name"] == "sensor-sw-1"
    ifs = {p.tags["ifname"]: p.fields for p in by_measurement(points, "interface")}
    assert ifs["1/1"]["in_octets"] == 9876543210 and ifs["1/2"]["oper_status"] == 2
    poe = by_measurement(points, "poe")
    assert sorted(p.tags.get("ifname", "budget") for p in poe) == ["1/1", "1/2", "budget"]
    assert not by_measurement(points, "sensor")
    assert errors(points) == [("sensors", "timeout")]
    assert by_measurement(points, "snmp_error")[0].fields["consecutive_failures"] == 1
    assert retries_below(client, POE_PORTS) == {1}  # the tables after it were asked


@pytest.mark.parametrize("profiles", [FOUR_TABLES, ("if_mib", "entity_sensor", "poe")],
                         ids=["scalars first", "tables only"])
@run
async def test_first_request_timing_out_means_unreachable_after_one_request(
        profiles: tuple[str, ...]) -> None:
    client, src = slow_switch(profiles=profiles)
    client.fail["h"] = TIMEOUT
    points = await src.collect(T0)
    assert_wire_valid(points)
    assert points[0].fields["reachable"] == 0
    assert len(client.requests) == 1
    # One timeout for the device, not one per table (no "skipped" points either).
    assert errors(points) == [("system" if "system" in profiles else "interfaces", "timeout")]


@run
async def test_two_tables_in_a_row_without_answer_skip_the_rest_with_errors() -> None:
    client, src = slow_switch(dropped=False)
    client.fail_subtree[("h", IF_TABLE)] = TIMEOUT
    client.fail_subtree[("h", SENSORS)] = TIMEOUT
    points = await src.collect(T0)
    assert_wire_valid(points)
    assert points[0].fields["reachable"] == 1  # the system group answered
    assert errors(points) == [("interfaces", "timeout"), ("sensors", "timeout"),
                              ("poe_ports", "skipped"), ("poe_budget", "skipped")]
    skipped = by_measurement(points, "snmp_error")[2:]
    assert all(p.fields["message"].startswith(  # type: ignore[union-attr]
        "not asked: interfaces and sensors got no answer") for p in skipped)
    assert {p.fields["consecutive_failures"] for p in skipped} == {1}
    assert not retries_below(client, POE_PORTS)  # not asked: no third timeout
    # Next poll, both still silent: old news, asked without retries, not evidence that
    # the device left, so the PoE tables are asked again and answer.
    client.requests.clear()
    points = await src.collect(T0 + 60 * S)
    assert errors(points) == [("interfaces", "timeout"), ("sensors", "timeout")]
    assert {p.fields["consecutive_failures"] for p in by_measurement(points, "snmp_error")} == {2}
    assert len(by_measurement(points, "poe")) == 3
    assert retries_below(client, IF_TABLE) == retries_below(client, SENSORS) == {0}
    assert retries_below(client, POE_PORTS) == {1}


@run
async def test_an_answer_between_two_timeouts_is_not_in_a_row() -> None:
    client, src = slow_switch(dropped=False)
    client.fail_subtree[("h", IF_TABLE)] = TIMEOUT
    client.fail_subtree[("h", POE_PORTS)] = TIMEOUT
    points = await src.collect(T0)
    assert errors(points) == [("interfaces", "timeout"), ("poe_ports", "timeout")]
    assert {p.tags["sensor"] for p in by_measurement(points, "sensor")} == {"Temp 1", "Fan 1"}
    (budget,) = by_measurement(points, "poe")
    assert budget.fields["power_w"] == 370.0


@run
async def test_silent_table_is_asked_without_retries_until_it_answers_again() -> None:
    client, src = slow_switch(retries=2)
    await src.collect(T0)
    assert retries_below(client, SENSORS) == {2}  # first timeout: with its retries
    for n in (2, 3):  # known silent: one timeout per poll, not retries + 1
        client.requests.clear()
        points = await src.collect(T0 + n * 60 * S)
        assert retries_below(client, SENSORS) == {0}
        assert retries_below(client, IF_TABLE) == retries_below(client, POE_PORTS) == {2}
        assert by_measurement(points, "snmp_error")[0].fields["consecutive_failures"] == n
    client.devices["h"].dropped.clear()  # the sensor table answers again
    client.requests.clear()
    points = await src.collect(T0 + 240 * S)
    assert retries_below(client, SENSORS) == {0}  # still asked as silent, and it answers
    temps = {p.tags["sensor"]: p.fields["value"] for p in by_measurement(points, "sensor")}
    assert temps == {"Temp 1": 41.0, "Fan 1": 4200.0}
    assert not by_measurement(points, "snmp_error")
    client.requests.clear()
    await src.collect(T0 + 300 * S)
    assert retries_below(client, SENSORS) == {2}  # answered last time: retries are back


@run
async def test_table_cut_off_mid_walk_drops_its_rows_and_counts_as_an_answer() -> None:
    """Rows of a partial walk would lack columns (a missing ifName is another series)."""

    class CutOff(FakeSnmpClient):
        async def get_bulk(self, target: Target, oids: Sequence[Oid],
                           max_repetitions: int) -> list[VarBind]:
            if oids[0][: len(IF_X)] == IF_X and oids[0] != (*IF_X, 1):
                raise TIMEOUT  # the second GETBULK of the interfaces walk
            return await super().get_bulk(target, oids, max_repetitions)

    # 13 columns and 14 varbinds per answer: one row per request. No scalar group, so
    # the interfaces walk is the first thing the device answers in this poll.
    client = CutOff({"h": parse_snmprec(SLOW_SWITCH)}, max_varbinds=14)
    (src,) = sources(client, device("sw", host="h", profiles=("if_mib", "poe")))
    points = await src.collect(T0)
    assert_wire_valid(points)
    assert points[0].fields["reachable"] == 1  # it answered before it stopped
    assert not interfaces(points)
    (err,) = by_measurement(points, "snmp_error")
    assert (err.tags["table"], err.tags["error"]) == ("interfaces", "timeout")
    assert "after 1 answered request(s) of this table; its partial rows are dropped" in str(
        err.fields["message"])
    assert len(by_measurement(points, "poe")) == 3  # the poll went on
