"""SNMP recordings for the simulated schools: the project's own routers, and subsets of
third-party recordings taken from the ``snmpsim-data`` package at run time.

The uplink routers are written here, in code, because their traffic must move at a
known, per-school rate: ``ifHCInOctets``/``ifHCOutOctets`` (and the 32-bit counters,
with wrap) use snmpsim's ``numeric`` variation, which answers
``initial + rate * (now - snmpsim start)``. A rate in octets per second is therefore
exactly the ``in_bps / 8`` the agent must compute.

Third-party recordings are never stored in this repository: :func:`recording_source`
finds them in the installed ``snmpsim-data`` package, and the demo copies them into its
run directory (snmpsim does not follow links). The largest one worth showing, the Cisco
WLAN controller (40 MB, ~25 s to index), is cut down to the subtrees the agent polls.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from schoolnet.sim.servers import read_recording, snmpsim_data_file

IF_HC_IN_OCTETS = "1.3.6.1.2.1.31.1.1.1.6"
IF_HC_OUT_OCTETS = "1.3.6.1.2.1.31.1.1.1.10"


@dataclass(frozen=True, kw_only=True)
class RouterInterface:
    """One interface of a simulated router and the traffic it carries (Mbit/s)."""

    index: int
    name: str
    alias: str
    speed_mbit: int
    in_mbit: float
    out_mbit: float
    if_type: int = 6  # ethernetCsmacd; DSL uplinks use 251 (vdsl2)


def octets_per_second(mbit: float) -> float:
    """Counter rate in octets/s for a traffic rate in Mbit/s (10^6 bit/s)."""
    return mbit * 1_000_000 / 8


def _oid_key(line: str) -> tuple[int, ...]:
    return tuple(int(arc) for arc in line.split("|", 1)[0].split("."))


def _hex(text: str) -> str:
    return text.encode().hex()


def router_recording(*, sys_name: str, location: str, contact: str,
                     interfaces: Iterable[RouterInterface], uptime_ticks: int) -> str:
    """The ``.snmprec`` text of an uplink router with moving interface counters.

    System group and IF-MIB (ifTable and ifXTable). Octet and packet counters use the
    ``numeric`` variation at the interface's rate; ``sysUpTime`` advances at 100
    ticks/s like a real agent's, so counter-reset checks see no reboot.
    """
    ifs = list(interfaces)
    recs: list[str] = [
        f"1.3.6.1.2.1.1.1.0|4x|{_hex('schoolnet demo uplink router (simulated)')}",
        "1.3.6.1.2.1.1.2.0|6|1.3.6.1.4.1.8072.3.2.10",  # net-snmp's generic Linux agent
        f"1.3.6.1.2.1.1.3.0|67:numeric|rate=100,initial={uptime_ticks}",
        f"1.3.6.1.2.1.1.4.0|4x|{_hex(contact)}",
        f"1.3.6.1.2.1.1.5.0|4x|{_hex(sys_name)}",
        f"1.3.6.1.2.1.1.6.0|4x|{_hex(location)}",
        "1.3.6.1.2.1.1.7.0|2|78",
        f"1.3.6.1.2.1.2.1.0|2|{len(ifs)}",
    ]
    for i in ifs:
        n = i.index
        rate_in, rate_out = octets_per_second(i.in_mbit), octets_per_second(i.out_mbit)
        # ~800-byte average packets: plausible for mixed school traffic.
        pps_in, pps_out = rate_in / 800, rate_out / 800
        # Distinct start values per interface, so no two series look alike.
        start = 10_000_000_000 * n + 7_654_321
        t = "1.3.6.1.2.1.2.2.1"
        x = "1.3.6.1.2.1.31.1.1.1"
        recs += [
            f"{t}.1.{n}|2|{n}",
            f"{t}.2.{n}|4x|{_hex(i.name)}",
            f"{t}.3.{n}|2|{i.if_type}",
            f"{t}.4.{n}|2|1500",
            f"{t}.5.{n}|66|{min(i.speed_mbit * 1_000_000, 4_294_967_295)}",
            f"{t}.6.{n}|4x|02005e00{n:04x}",
            f"{t}.7.{n}|2|1",
            f"{t}.8.{n}|2|1",
            f"{t}.9.{n}|67|0",
            f"{t}.10.{n}|65:numeric|rate={rate_in},initial={start % 2**32},wrap=1",
            f"{t}.11.{n}|65:numeric|rate={pps_in},initial={n * 1000},wrap=1",
            f"{t}.13.{n}|65|0",
            f"{t}.14.{n}|65|0",
            f"{t}.16.{n}|65:numeric|rate={rate_out},initial={start // 3 % 2**32},wrap=1",
            f"{t}.17.{n}|65:numeric|rate={pps_out},initial={n * 500},wrap=1",
            f"{t}.19.{n}|65|0",
            f"{t}.20.{n}|65|0",
            f"{x}.1.{n}|4x|{_hex(i.name)}",
            f"{x}.6.{n}|70:numeric|rate={rate_in},initial={start}",
            f"{x}.7.{n}|70:numeric|rate={pps_in},initial={n * 1000}",
            f"{x}.10.{n}|70:numeric|rate={rate_out},initial={start // 3}",
            f"{x}.11.{n}|70:numeric|rate={pps_out},initial={n * 500}",
            f"{x}.15.{n}|66|{i.speed_mbit}",
            f"{x}.16.{n}|2|2",
            f"{x}.17.{n}|2|1",
            f"{x}.18.{n}|4x|{_hex(i.alias)}",
            f"{x}.19.{n}|67|0",
        ]
    # snmpsim answers GETNEXT/GETBULK by walking the file in order: it must be sorted.
    recs.sort(key=_oid_key)
    return "\n".join(recs) + "\n"


@dataclass(frozen=True)
class ThirdPartyRecording:
    """A recording from ``snmpsim-data``, optionally cut down to some OID subtrees."""

    name: str  # e.g. "network/switch/cisco-c3560"
    subtrees: tuple[str, ...] = ()  # empty: the whole recording


#: The recordings the simulated city uses, by community. The controller is cut to the
#: MIB-2 tree and the AP tables (bsnAPTable, bsnAPIfTable): indexing the whole 40 MB
#: file would add ~25 s to every start for tables the agent does not poll.
THIRD_PARTY: dict[str, ThirdPartyRecording] = {
    "cisco-c3560": ThirdPartyRecording("network/switch/cisco-c3560"),
    "cisco-c3750": ThirdPartyRecording("network/switch/cisco-c3750"),
    "hpe-procurve": ThirdPartyRecording("network/switch/hpe-procurve-516733-b21"),
    "aruba-7010": ThirdPartyRecording("network/wifi/aruba-7010"),
    "ubiquiti-m5": ThirdPartyRecording("network/wifi/ubiquiti-m5"),
    "vyatta": ThirdPartyRecording("network/router/vyatta-unknown"),
    "cisco-controller": ThirdPartyRecording(
        "network/appliance/cisco-controller",
        ("1.3.6.1.2.1", "1.3.6.1.4.1.14179.2.2.1", "1.3.6.1.4.1.14179.2.2.2"),
    ),
}


def _in_subtrees(oid: str, subtrees: tuple[str, ...]) -> bool:
    return any(oid == s or oid.startswith(s + ".") for s in subtrees)


def recording_source(rec: ThirdPartyRecording) -> Path | str:
    """What the Snmpsim launcher should serve: the package file, or the cut-down text."""
    path = snmpsim_data_file(rec.name)
    if not rec.subtrees:
        return path
    lines = read_recording(path).splitlines()
    kept = [ln for ln in lines if ln and _in_subtrees(ln.split("|", 1)[0], rec.subtrees)]
    return "\n".join(kept) + "\n"


def recording_value(text: str, oid: str) -> tuple[str, str]:
    """The ``(tag, value)`` a recording holds for ``oid``; KeyError if it has none."""
    prefix = oid + "|"
    for line in text.splitlines():
        if line.startswith(prefix):
            tag, value = line[len(prefix):].split("|", 1)
            return tag, value
    raise KeyError(oid)
