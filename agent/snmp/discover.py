"""``schoolnet agent discover``: ask one device who it is and which profiles fit.

A plain function over the SNMP client (the click command in agent/cli.py is a thin
layer over :func:`discover`), so a test can run it against snmpsim or the fake.
"""

from __future__ import annotations

import re

from agent.snmp.client import PysnmpClient, SnmpClient, Target
from agent.snmp.detect import Detection, load_rules, probe
from schoolnet.inventory import SnmpCredentials


async def discover(host: str, port: int, creds: SnmpCredentials,
                   client: SnmpClient | None = None) -> Detection:
    """Detect the device at ``host:port``; raises SnmpError when it does not answer."""
    own = client is None
    snmp = client if client is not None else PysnmpClient()
    try:
        target = Target(host=host, port=port, credentials=creds, timeout_s=creds.timeout_s,
                        retries=creds.retries)
        return await probe(snmp, target, load_rules())
    finally:
        if own:
            await snmp.close()


def report(host: str, port: int, found: Detection) -> str:
    """What ``discover`` prints: the facts, then a device entry to paste."""
    rule = found.rule
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", found.sys_name).strip("-") or host
    lines = [
        f"host         {host}:{port}",
        f"sysName      {found.sys_name or '(empty)'}",
        f"sysDescr     {found.sys_descr.splitlines()[0] if found.sys_descr else '(empty)'}",
        f"sysObjectID  {found.sys_object_id or '(none)'}",
        f"rule         {rule.name if rule else '(none matched: standard profiles only)'}",
        f"profiles     {', '.join(found.profiles)}",
        "",
        "# for the site config (or `profile: auto` to detect at every agent start):",
        "devices:",
        f"  - name: {name}",
        f"    host: {host}",
    ]
    if port != 161:
        lines.append(f"    port: {port}")
    lines.append(f"    role: {rule.role if rule and rule.role else 'switch'}")
    if rule and rule.vendor:
        lines.append(f"    vendor: {rule.vendor}")
    lines.append(f"    profile: [{', '.join(found.profiles)}]")
    return "\n".join(lines)
