"""Varbind values → typed fields and tags; row indexes; lookups from another table."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.snmp import build_sources
from agent.snmp.client import END_OF_MIB, Value, parse_oid
from agent.snmp.convert import convert, parse_index, tag_value
from agent.snmp.fake import FakeSnmpClient, parse_snmprec
from agent.snmp.profile import Column, IndexPart
from schoolnet.configfile import Secret
from schoolnet.inventory import AgentSettings, Device, Site, SnmpCredentials
from schoolnet.wire import FieldValue


def col(type_: str, scale: float | None = None) -> Column:
    return Column(oid=(1, 3, 6, 1), mib_name="x", type=type_, field="f", scale=scale)


@pytest.mark.parametrize(
    ("type_", "scale", "value", "want"),
    [
        pytest.param("counter64", None, 2**64 - 1, 2**63 - 1, id="counter64 clamped to int64"),
        pytest.param("counter32", None, 42, 42, id="counter32"),
        pytest.param("enum", None, 2, 2, id="enum"),
        pytest.param("integer", None, -40, -40, id="negative integer"),
        pytest.param("integer", 0.1, 215, 21.5, id="integer with scale is float"),
        pytest.param("gauge", None, 1000, 1000.0, id="gauge is float"),
        pytest.param("gauge", 0.000001, 100_000_000, 100.0, id="ifSpeed to Mbit/s"),
        pytest.param("timeticks", None, 492446481, 4924464.81, id="timeticks to seconds"),
        pytest.param("string", None, b"Gi0/1\x00\x00", "Gi0/1", id="NUL padding stripped"),
        pytest.param("string", None, b"Stra\xc3\x9fe", "Straße", id="utf-8"),
        pytest.param("string", None, b"\xff\xfe", "\ufffd\ufffd", id="not utf-8: replaced"),
        pytest.param("hexstring", None, b"\x00\x1b\x21\xaa", "00:1b:21:aa", id="hexstring"),
        pytest.param("oid", None, (1, 3, 6, 1, 4, 1, 9), "1.3.6.1.4.1.9", id="oid"),
        pytest.param("ipaddress", None, b"\x0a\x14\x01\x01", "10.20.1.1", id="ipaddress"),
        pytest.param("counter64", None, b"123", None, id="wrong kind: dropped, not guessed"),
        pytest.param("gauge", None, (1, 3), None, id="oid for a gauge: dropped"),
        pytest.param("counter32", None, None, None, id="no value"),
        pytest.param("counter32", None, END_OF_MIB, None, id="end of MIB"),
    ],
)
def test_convert(type_: str, scale: float | None, value: Value, want: FieldValue | None) -> None:
    got = convert(col(type_, scale), value)
    assert got == want
    if want is not None:
        assert type(got) is type(want)


@pytest.mark.parametrize(
    ("value", "want"),
    [
        pytest.param(b"  Gi0/1 ", "Gi0/1", id="trimmed"),
        pytest.param(b"", None, id="empty: no tag"),
        pytest.param(b"\x00\x00", None, id="only NULs: no tag"),
        pytest.param(7, "7", id="integer"),
        pytest.param(b"x" * 300, "x" * 256, id="cut to the tag limit"),
    ],
)
def test_tag_value(value: Value, want: str | None) -> None:
    assert tag_value(col("string"), value) == want


INT = IndexPart("i", "integer", "ifindex")


@pytest.mark.parametrize(
    ("suffix", "parts", "want"),
    [
        pytest.param((7,), (INT,), {"i": ("7", (7,))}, id="integer"),
        pytest.param((7, 8), (INT,), None, id="left-over sub-identifiers"),
        pytest.param((), (INT,), None, id="empty"),
        pytest.param((0, 27, 33, 170, 187, 204, 5),
                     (IndexPart("m", "mac"), IndexPart("r", "integer")),
                     {"m": ("00:1b:21:aa:bb:cc", (0, 27, 33, 170, 187, 204)), "r": ("5", (5,))},
                     id="mac then integer (WLAN client tables)"),
        pytest.param((10, 20, 1, 1), (IndexPart("a", "ipv4"),),
                     {"a": ("10.20.1.1", (10, 20, 1, 1))}, id="ipv4"),
        pytest.param((4, 87, 76, 65, 78, 1), (IndexPart("s", "string"), IndexPart("n", "integer")),
                     {"s": ("WLAN", (4, 87, 76, 65, 78)), "n": ("1", (1,))},
                     id="length-prefixed string (SSID)"),
        pytest.param((5, 87, 76), (IndexPart("s", "string"),), None, id="string too short"),
        pytest.param((1, 83, 99, 104, 117, 108, 101),
                     (IndexPart("n", "integer"), IndexPart("s", "implied_string")),
                     {"n": ("1", (1,)), "s": ("Schule", (83, 99, 104, 117, 108, 101))},
                     id="implied string"),
        pytest.param((3, 300, 1, 1), (IndexPart("s", "string"),), None, id="not bytes"),
    ],
)
def test_parse_index(suffix: tuple[int, ...], parts: tuple[IndexPart, ...],
                     want: dict[str, tuple[str, tuple[int, ...]]] | None) -> None:
    assert parse_index(suffix, parts) == want


LLDP_PROFILE = """\
# A test-only profile in the shape of LLDP-MIB's lldpRemTable: a three-part index,
# string tags, and the local interface name looked up by the local port number.
profile: lldp_test
tables:
  lldp_neighbours:
    measurement: lldp
    index:
      - {name: time_mark, type: integer}
      - {name: port, type: integer}
      - {name: rem_index, type: integer}
    columns:
      1.0.8802.1.1.2.1.4.1.1.5: {field: chassis_id, type: hexstring}  # lldpRemChassisId
      1.0.8802.1.1.2.1.4.1.1.7: {tag: remote_port, type: string}      # lldpRemPortId
      1.0.8802.1.1.2.1.4.1.1.9: {tag: remote_name, type: string}      # lldpRemSysName
    lookups:
      - {index: port, oid: 1.0.8802.1.1.2.1.3.7.1.4, tag: ifname, type: string}  # lldpLocPortDesc
"""

LLDP_DATA = """\
1.0.8802.1.1.2.1.3.7.1.4.3|4|ether3
1.0.8802.1.1.2.1.3.7.1.4.5|4|ether5
1.0.8802.1.1.2.1.4.1.1.5.0.3.1|4x|001b21aabbcc
1.0.8802.1.1.2.1.4.1.1.5.0.5.2|4x|001b21ddeeff
1.0.8802.1.1.2.1.4.1.1.7.0.3.1|4|Gi0/24
1.0.8802.1.1.2.1.4.1.1.7.0.5.2|4|port 1
1.0.8802.1.1.2.1.4.1.1.9.0.3.1|4|core-sw
1.0.8802.1.1.2.1.4.1.1.9.0.5.2|4|
"""


def test_a_new_table_is_pure_data(tmp_path: Path) -> None:
    """Index parts, string tags and a lookup: an LLDP-shaped profile needs no code."""
    (tmp_path / "lldp_test.yaml").write_text(LLDP_PROFILE)
    dev = Device(name="router", host="h", role="router", profiles=("lldp_test",),
                 snmp=SnmpCredentials(version="2c", community=Secret("c")))
    site = Site(id="s", name="S", tenant="t", uplink=None, agent=AgentSettings(), devices=(dev,))
    client = FakeSnmpClient({"h": parse_snmprec(LLDP_DATA)})
    (src,) = build_sources(site, client=client, profile_dirs=[tmp_path])
    points = asyncio.run(src.collect(1_763_712_000 * 10**9))
    rows = [(dict(p.tags), dict(p.fields)) for p in points if p.measurement == "lldp"]
    base = {"device": "router", "role": "router"}
    assert rows == [
        ({**base, "ifname": "ether3", "remote_port": "Gi0/24", "remote_name": "core-sw"},
         {"chassis_id": "00:1b:21:aa:bb:cc"}),
        ({**base, "ifname": "ether5", "remote_port": "port 1"},
         {"chassis_id": "00:1b:21:dd:ee:ff"}),
    ]
    walked = {o for _, _, oids in client.requests for o in oids}
    assert parse_oid("1.0.8802.1.1.2.1.3.7.1.4") in walked
