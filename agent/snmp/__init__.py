"""The agent's SNMP poller (pysnmp 7, asyncio): profiles as data, rates with reset handling.

The agent runtime calls :func:`build_sources` with a site and gets one source per
device (``snmp:<device>``), each with ``async collect(now_ns)`` and ``async close()``.

Modules: ``client`` (the narrow SNMP interface and its pysnmp implementation), ``fake``
(an in-memory agent for unit tests), ``walk`` (parallel column walks), ``profile``
(YAML profiles in agent/profiles/, strict loader), ``convert`` (varbinds → fields,
tags, rows), ``rates`` (pure rate math), ``poller`` (sources and points).
"""

from agent.snmp.poller import PollStats, SnmpDeviceSource, build_sources

__all__ = ["PollStats", "SnmpDeviceSource", "build_sources"]
