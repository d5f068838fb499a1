"""Helpers shared by the collector's unit and integration tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

#: A device as (name, role, vendor); vendor "" leaves it out of the inventory.
DeviceSpec = tuple[str, str, str]


def write_inventory(root: Path, tenant: str,
                    sites: Mapping[str, Sequence[DeviceSpec]]) -> Path:
    """Write ``root/<tenant>/{tenant.yaml,<site>.yaml}``; returns ``root``."""
    tdir = root / tenant
    tdir.mkdir(parents=True, exist_ok=True)
    (tdir / "tenant.yaml").write_text(
        f"tenant: {tenant}\nname: Test tenant {tenant}\n"
        "defaults:\n  snmp:\n    version: 2c\n    community: public\n")
    for site, devices in sites.items():
        lines = [f"site: {site}", f"name: School {site}", "devices:"]
        for i, (name, role, vendor) in enumerate(devices):
            lines += [f"  - name: {name}", f"    host: 10.0.0.{i + 1}", f"    role: {role}"]
            if vendor:
                lines.append(f"    vendor: {vendor}")
        (tdir / f"{site}.yaml").write_text("\n".join(lines) + "\n")
    return root
