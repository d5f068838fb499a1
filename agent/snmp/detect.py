"""``profile: auto``: which profiles a device gets, from sysObjectID and sysDescr.

The rules are data (``agent/profiles/detect/rules.yaml``), read strictly like the
profiles; :func:`detect` is pure, :func:`probe` asks a device for the two objects (and
sysName, for ``schoolnet agent discover``). The poller detects at its first poll and
again after the device rebooted (a firmware update may have changed what it offers).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from agent.snmp.client import Oid, SnmpClient, Target, parse_oid
from agent.snmp.convert import as_string
from agent.snmp.profile import PROFILE_DIR
from agent.snmp.walk import get_scalars
from schoolnet.configfile import IssueList, MappingReader, compose_file

RULES_FILE: Final = PROFILE_DIR / "detect" / "rules.yaml"
#: What a device is asked for: sysDescr, sysObjectID, sysName.
SYS_DESCR: Final = (1, 3, 6, 1, 2, 1, 1, 1, 0)
SYS_OBJECT_ID: Final = (1, 3, 6, 1, 2, 1, 1, 2, 0)
SYS_NAME: Final = (1, 3, 6, 1, 2, 1, 1, 5, 0)
ROLES: Final = ("router", "firewall", "switch", "ap", "controller")


@dataclass(frozen=True, slots=True)
class Rule:
    """One match rule: object-id prefixes or sysDescr patterns → profiles."""

    name: str
    object_ids: tuple[Oid, ...]
    descr: tuple[re.Pattern[str], ...]
    profiles: tuple[str, ...]
    vendor: str = ""
    role: str = ""

    def matches(self, object_id: Oid | None, descr: str) -> bool:
        """Whether the device's sysObjectID or sysDescr matches this rule."""
        if object_id is not None and any(object_id[: len(p)] == p for p in self.object_ids):
            return True
        return bool(descr) and any(p.search(descr) for p in self.descr)


@dataclass(frozen=True, slots=True)
class Rules:
    """The rule file: profiles every device gets, then the ordered rules."""

    base: tuple[str, ...]
    rules: tuple[Rule, ...]


@dataclass(frozen=True, slots=True)
class Detection:
    """What detection found: the rule (None: no rule matched) and the profiles."""

    rule: Rule | None
    profiles: tuple[str, ...]
    sys_descr: str = ""
    sys_object_id: str = ""
    sys_name: str = ""


def load_rules(path: Path = RULES_FILE) -> Rules:
    """Read the rule file; raises :class:`~schoolnet.configfile.ConfigError`."""
    issues = IssueList()
    node = compose_file(path, issues)
    r = MappingReader(node, "", issues)
    base = r.string_list("base", ("system", "if_mib"))
    rules: list[Rule] = []
    for i, rnode in enumerate(r.sequence("rules")):
        rr = MappingReader(rnode, f"rules[{i}]", issues)
        name = rr.value("name", str)
        oids: list[Oid] = []
        for text in rr.string_list("object_ids"):
            try:
                oids.append(parse_oid(text))
            except ValueError:
                issues.add(rr.node_of("object_ids"), rr.sub("object_ids"), f"bad OID {text!r}")
        patterns: list[re.Pattern[str]] = []
        for text in rr.string_list("descr"):
            try:
                patterns.append(re.compile(text, re.IGNORECASE))
            except re.error as exc:
                issues.add(rr.node_of("descr"), rr.sub("descr"), f"bad regex: {exc}")
        pnode = rr.node_of("profiles")
        profiles = tuple(str(n.value) for n in getattr(pnode, "value", []) or [])
        vendor = rr.value("vendor", str, "")
        role = rr.value("role", str, "", lambda v: None if v in ROLES else f"one of {ROLES}")
        rr.finish()
        if not oids and not patterns:
            issues.add(rnode, f"rules[{i}]", "needs object_ids or descr")
        if name:
            rules.append(Rule(name, tuple(oids), tuple(patterns), profiles, vendor, role))
    r.finish()
    issues.raise_if_any()
    return Rules(base=base, rules=tuple(rules))


def detect(rules: Rules, sys_object_id: str, sys_descr: str, sys_name: str = "") -> Detection:
    """The first rule matching the device, and base + its profiles (no duplicates)."""
    try:
        oid: Oid | None = parse_oid(sys_object_id) if sys_object_id else None
    except ValueError:
        oid = None
    for rule in rules.rules:
        if rule.matches(oid, sys_descr):
            profiles = tuple(dict.fromkeys(rules.base + rule.profiles))
            return Detection(rule, profiles, sys_descr, sys_object_id, sys_name)
    return Detection(None, rules.base, sys_descr, sys_object_id, sys_name)


async def probe(client: SnmpClient, target: Target,
                rules: Rules) -> Detection:
    """GET sysDescr, sysObjectID and sysName and detect; raises SnmpError."""
    values = await get_scalars(client, target, [SYS_DESCR, SYS_OBJECT_ID, SYS_NAME])

    def text(oid: Oid, type_: str = "string") -> str:
        value = values.get(oid)
        return (as_string(type_, value) or "") if value is not None else ""

    return detect(rules, text(SYS_OBJECT_ID, "oid"), text(SYS_DESCR), text(SYS_NAME))


def uses_auto(profiles: Sequence[str]) -> bool:
    """Whether a device's ``profile:`` asks for detection (``auto``)."""
    return "auto" in profiles


__all__ = ["Detection", "Rule", "Rules", "detect", "load_rules", "probe", "uses_auto"]
