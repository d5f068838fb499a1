"""The site inventory: tenants, sites, uplinks and devices, loaded strictly from YAML.

Layout of ``site-configs/``::

    site-configs/
      <tenant>/
        tenant.yaml        the school authority: id, name, defaults for its sites
        <site>.yaml        one school site: uplink, agent settings, devices

Defaults from ``tenant.yaml`` (``defaults.agent``, ``defaults.snmp``,
``defaults.thresholds``, ``defaults.ansible``, ``defaults.probes``) are deep-merged under
each site's own settings; a device without ``snmp:`` takes the site's ``snmp:`` and then
the tenant's. A tenant's ``alerting:`` (recipients, language, calendar, mail policy) is
read by :mod:`schoolnet.alerting`. A site's ``ansible:`` (host, user, port) tells Ansible how to
reach the site box (:mod:`schoolnet.ansible_inventory`).
Every problem is reported as ``file:line: field: message``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from yaml.nodes import MappingNode, Node, ScalarNode

from schoolnet.alerting import (
    TenantAlerting,
    Thresholds,
    default_alerting,
    read_tenant_alerting,
    read_thresholds,
)
from schoolnet.configfile import (
    ConfigError,
    IssueList,
    MappingReader,
    Secret,
    compose_file,
    merge_nodes,
    one_of,
    positive,
)
from schoolnet.probeconfig import ProbeSettings, read_probes
from schoolnet.wire import DEVICE_RE, ID_RE

ROLES = ("router", "firewall", "switch", "ap", "controller")
UPLINK_KINDS = ("fibre", "dsl", "lte", "5g", "cable", "other")
AUTH_PROTOCOLS = ("none", "md5", "sha", "sha224", "sha256", "sha384", "sha512")
PRIV_PROTOCOLS = ("none", "des", "3des", "aes", "aes128", "aes192", "aes256")
TENANT_FILE = "tenant.yaml"

_HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
    r"(\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


def check_host(val: str) -> str | None:
    """Check: an IPv4/IPv6 address or a DNS host name."""
    try:
        ipaddress.ip_address(val)
        return None
    except ValueError:
        pass
    if re.fullmatch(r"[0-9.]+", val) or not _HOSTNAME_RE.match(val):
        return f"{val!r} is not a valid IP address or host name"
    return None


def _check_id(val: str) -> str | None:
    return None if ID_RE.match(val) else "must be lower-case letters, digits, '-' or '_'"


def _check_device(val: str) -> str | None:
    return None if DEVICE_RE.match(val) else "must be letters, digits, '.', '-' or '_'"


def _check_port(val: int) -> str | None:
    return None if 0 < val < 65536 else "must be a port number 1-65535"


@dataclass(frozen=True, kw_only=True)
class SnmpCredentials:
    """How to talk SNMP to a device: v2c community or v3 USM user."""

    version: str  # "2c" | "3"
    community: Secret | None = None
    user: str = ""
    auth_protocol: str = "none"
    auth_key: Secret | None = None
    priv_protocol: str = "none"
    priv_key: Secret | None = None
    context: str = ""
    timeout_s: float = 2.0
    retries: int = 1


@dataclass(frozen=True, kw_only=True)
class InterfaceSettings:
    """Per-interface settings of a device (matched by ifName)."""

    name: str
    monitor: bool = False


@dataclass(frozen=True, kw_only=True)
class Device:
    """A polled device at a site."""

    name: str
    host: str
    port: int = 161
    role: str
    vendor: str = ""
    profiles: tuple[str, ...] = ("system", "if_mib")
    parent: str | None = None
    snmp: SnmpCredentials
    interfaces: tuple[InterfaceSettings, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Uplink:
    """The site's internet uplink and what the provider contracted."""

    kind: str
    down_mbit: float
    up_mbit: float
    device: str
    interface: str


@dataclass(frozen=True, kw_only=True)
class BrokerSettings:
    """Where and how the agent reaches the MQTT broker."""

    host: str = "127.0.0.1"
    port: int = 1883
    tls: bool = False
    ca_file: str | None = None
    #: Client certificate and key (PEM) for brokers that require one (optional).
    cert_file: str | None = None
    key_file: str | None = None
    username: str | None = None  # default: the site id
    password: Secret | None = None
    keepalive_s: int = 30


@dataclass(frozen=True, kw_only=True)
class AgentSettings:
    """How the site's agent runs."""

    poll_interval_s: float = 60.0
    snmp_concurrency: int = 16
    spool_dir: str = "/var/lib/schoolnet/spool"
    broker: BrokerSettings = field(default_factory=BrokerSettings)


@dataclass(frozen=True, kw_only=True)
class AnsibleSettings:
    """How Ansible reaches the site box (``ansible:``); unset fields use Ansible's defaults."""

    host: str | None = None  # management address of the site box
    user: str | None = None
    port: int | None = None


@dataclass(frozen=True, kw_only=True)
class Site:
    """One school site: its uplink, agent settings and devices."""

    id: str
    name: str
    tenant: str
    uplink: Uplink | None
    agent: AgentSettings
    devices: tuple[Device, ...]
    source: str = ""
    #: Outage thresholds: built-in defaults < tenant ``defaults.thresholds`` < site.
    thresholds: Thresholds = field(default_factory=Thresholds)
    #: Uplink probes (``probes:``, tenant ``defaults.probes`` merged); None: no probes.
    probes: ProbeSettings | None = None
    #: The tenant's calendar and mail settings (the agent schedules throughput tests
    #: outside its lesson hours).
    alerting: TenantAlerting = field(default_factory=default_alerting)
    #: How Ansible reaches the site box (tenant ``defaults.ansible`` < site ``ansible:``).
    ansible: AnsibleSettings = field(default_factory=AnsibleSettings)

    def device(self, name: str) -> Device | None:
        """The device called ``name``, or None."""
        for d in self.devices:
            if d.name == name:
                return d
        return None


@dataclass(frozen=True, kw_only=True)
class Tenant:
    """A school authority (Schulträger): one tenant on a shared installation."""

    id: str
    name: str
    source: str = ""
    #: Recipients, language, calendar and mail policy (``alerting:`` in tenant.yaml).
    alerting: TenantAlerting = field(default_factory=default_alerting)


@dataclass(frozen=True)
class Inventory:
    """Every tenant and site below one ``site-configs/`` directory."""

    tenants: Mapping[str, Tenant]
    sites: Mapping[tuple[str, str], Site]

    def site(self, tenant: str, site: str) -> Site | None:
        """The site ``site`` of ``tenant``, or None."""
        return self.sites.get((tenant, site))

    def __iter__(self) -> Iterator[Site]:
        return iter(self.sites.values())


def _read_snmp(r: MappingReader) -> SnmpCredentials | None:
    if not r.ok or r.node is None:
        return None
    version = r.value("version", (str, int), "2c")
    version = str(version)
    timeout = r.value("timeout_s", float, 2.0, positive)
    retries = r.value("retries", int, 1, lambda v: None if 0 <= v <= 10 else "must be 0-10")
    creds: SnmpCredentials | None = None
    if version in ("2c", "2"):
        community = r.secret("community")
        creds = SnmpCredentials(version="2c", community=community, timeout_s=timeout,
                                retries=retries)
    elif version == "3":
        user = r.value("user", str)
        auth = r.value("auth_protocol", str, "none", one_of(*AUTH_PROTOCOLS))
        priv = r.value("priv_protocol", str, "none", one_of(*PRIV_PROTOCOLS))
        auth_key = r.secret("auth_key", required=auth not in ("none", None))
        priv_key = r.secret("priv_key", required=priv not in ("none", None))
        if priv not in ("none", None) and auth in ("none", None):
            r.issues.add(r.node, r.sub("priv_protocol"), "privacy needs an auth_protocol")
        context = r.value("context", str, "")
        creds = SnmpCredentials(version="3", user=user or "", auth_protocol=auth or "none",
                                auth_key=auth_key, priv_protocol=priv or "none",
                                priv_key=priv_key, context=context, timeout_s=timeout,
                                retries=retries)
    else:
        r.issues.add(r.node_of("version"), r.sub("version"), "must be 2c or 3")
    r.finish()
    return creds


def _read_broker(r: MappingReader) -> BrokerSettings:
    b = BrokerSettings(
        host=r.value("host", str, "127.0.0.1", check_host),
        port=r.value("port", int, 1883, _check_port),
        tls=r.value("tls", bool, False),
        ca_file=r.value("ca_file", str, None),
        cert_file=r.value("cert_file", str, None),
        key_file=r.value("key_file", str, None),
        username=r.value("username", str, None),
        password=r.secret("password", required=False),
        keepalive_s=r.value("keepalive_s", int, 30, positive),
    )
    if (b.cert_file is None) != (b.key_file is None):
        r.issues.add(r.node, r.sub("cert_file"), "give both cert_file and key_file, or neither")
    r.finish()
    return b


def _read_agent(r: MappingReader) -> AgentSettings:
    a = AgentSettings(
        poll_interval_s=r.value("poll_interval_s", float, 60.0, positive),
        snmp_concurrency=r.value("snmp_concurrency", int, 16, positive),
        spool_dir=r.value("spool_dir", str, "/var/lib/schoolnet/spool"),
        broker=_read_broker(r.mapping("broker")),
    )
    r.finish()
    return a


def _read_ansible(r: MappingReader) -> AnsibleSettings:
    a = AnsibleSettings(
        host=r.value("host", str, None, check_host),
        user=r.value("user", str, None),
        port=r.value("port", int, None, _check_port),
    )
    r.finish()
    return a


def _read_interfaces(r: MappingReader) -> tuple[InterfaceSettings, ...]:
    out = []
    for name in list(r.keys()):
        ir = r.mapping(name)
        out.append(InterfaceSettings(name=name, monitor=ir.value("monitor", bool, False)))
        ir.finish()
    r.finish()
    return tuple(out)


def _read_device(node: Node, path: str, snmp_default: Node | None,
                 issues: IssueList) -> Device | None:
    r = MappingReader(node, path, issues)
    if not r.ok:
        return None
    name = r.value("name", str, check=_check_device)
    host = r.value("host", str, check=check_host)
    port = r.value("port", int, 161, _check_port)
    role = r.value("role", str, check=one_of(*ROLES))
    vendor = r.value("vendor", str, "")
    profiles = r.string_list("profile", ("system", "if_mib"))
    parent = r.value("parent", str, None)
    # SNMP settings are not merged: the most specific block (device, site, tenant) wins
    # whole, so a v3 device under v2c defaults never inherits a community.
    snmp_node = r.node_of("snmp") or snmp_default
    if snmp_node is None:
        issues.add(node, f"{path}.snmp", "is required (here, in the site or the tenant defaults)")
        snmp = None
    else:
        snmp = _read_snmp(MappingReader(snmp_node, f"{path}.snmp", issues))
    interfaces = _read_interfaces(r.mapping("interfaces"))
    r.finish()
    if None in (name, host, role, snmp):
        return None
    assert snmp is not None
    return Device(name=name, host=host, port=port, role=role, vendor=vendor, profiles=profiles,
                  parent=parent, snmp=snmp, interfaces=interfaces)


def _read_uplink(r: MappingReader) -> Uplink | None:
    if r.node is None:
        return None
    u = Uplink(
        kind=r.value("kind", str, check=one_of(*UPLINK_KINDS)),
        down_mbit=r.value("down_mbit", float, check=positive),
        up_mbit=r.value("up_mbit", float, check=positive),
        device=r.value("device", str),
        interface=r.value("interface", str),
    )
    r.finish()
    return u


def _read_tenant(path: Path, issues: IssueList) -> tuple[Tenant | None, Node | None]:
    node = compose_file(path, issues)
    if node is None:
        return None, None
    r = MappingReader(node, "", issues)
    tid = r.value("tenant", str, check=_check_id)
    name = r.value("name", str)
    defaults = r.mapping("defaults")
    dnode = defaults.node
    for key in ("agent", "snmp", "thresholds", "ansible", "probes"):
        defaults.node_of(key)
    defaults.finish()
    alerting = read_tenant_alerting(r.mapping("alerting"), path.parent)
    r.finish()
    if tid is not None and tid != path.parent.name:
        issues.add(r.node_of("tenant"), "tenant", f"must match its directory {path.parent.name!r}")
    if tid is None or name is None:
        return None, dnode
    return Tenant(id=tid, name=name, source=str(path), alerting=alerting), dnode


def _read_site(path: Path, tenant_id: str, tenant_defaults: Node | None,
               issues: IssueList, alerting: TenantAlerting | None = None) -> Site | None:
    node = compose_file(path, issues)
    if node is None:
        return None
    r = MappingReader(node, "", issues)
    if not r.ok:
        return None
    td = MappingReader(tenant_defaults, "defaults", IssueList())  # already checked
    sid = r.value("site", str, check=_check_id)
    name = r.value("name", str)
    tenant = r.value("tenant", str, tenant_id)
    if tenant != tenant_id:
        issues.add(r.node_of("tenant"), "tenant", f"must match its directory {tenant_id!r}")
    if sid is not None and sid != path.stem:
        issues.add(r.node_of("site"), "site", f"must match the file name {path.stem!r}")
    agent_node = merge_nodes(td.node_of("agent"), r.node_of("agent"))
    agent = _read_agent(MappingReader(agent_node, "agent", issues))
    uplink = _read_uplink(r.mapping("uplink"))
    thresholds_node = merge_nodes(td.node_of("thresholds"), r.node_of("thresholds"))
    thresholds = read_thresholds(MappingReader(thresholds_node, "thresholds", issues))
    probes_node = merge_nodes(td.node_of("probes"), r.node_of("probes"))
    probes = read_probes(MappingReader(probes_node, "probes", issues), alerting=alerting,
                         has_contract=uplink is not None and uplink.down_mbit is not None,
                         poll_interval_s=agent.poll_interval_s)
    ansible_node = merge_nodes(td.node_of("ansible"), r.node_of("ansible"))
    ansible = _read_ansible(MappingReader(ansible_node, "ansible", issues))
    snmp_default = r.node_of("snmp") or td.node_of("snmp")
    devices: list[tuple[int, Node, Device]] = []
    names: set[str] = set()
    for i, dnode in enumerate(r.sequence("devices")):
        dev = _read_device(dnode, f"devices[{i}]", snmp_default, issues)
        # A device with other errors still counts as present, so that its children do
        # not get a second, misleading "no such parent" error.
        dname = dev.name if dev else _raw_name(dnode)
        if dname is not None and dname in names:
            issues.add(dnode, f"devices[{i}].name", f"duplicate device name {dname!r}")
            continue
        if dname is not None:
            names.add(dname)
        if dev is not None:
            devices.append((i, dnode, dev))
    r.finish()
    for i, dnode, dev in devices:
        if dev.parent is not None and dev.parent not in names:
            issues.add(dnode, f"devices[{i}].parent", f"no device {dev.parent!r} here")
    if uplink is not None and uplink.device is not None and uplink.device not in names:
        issues.add(r.node_of("uplink"), "uplink.device", f"no device {uplink.device!r} here")
    if sid is None or name is None:
        return None
    return Site(id=sid, name=name, tenant=tenant_id, uplink=uplink, agent=agent,
                devices=tuple(d for _, _, d in devices), source=str(path),
                thresholds=thresholds, ansible=ansible, probes=probes,
                alerting=alerting if alerting is not None else default_alerting())


def _raw_name(node: Node) -> str | None:
    """The ``name:`` of a device mapping, read without any checks."""
    if isinstance(node, MappingNode):
        for k, v in node.value:
            if k.value == "name" and isinstance(v, ScalarNode):
                return str(v.value)
    return None


def load_site(path: str | Path, *, resolve_secrets: bool = True) -> Site:
    """Load one site file (with its tenant's defaults); raises :class:`ConfigError`."""
    path = Path(path)
    issues = IssueList(resolve_secrets=resolve_secrets)
    tenant_file = path.parent / TENANT_FILE
    defaults = None
    tenant: Tenant | None = None
    if tenant_file.exists():
        tenant, defaults = _read_tenant(tenant_file, issues)
    else:
        issues.add(None, "", f"no {TENANT_FILE} beside the site file", file=str(path))
    site = _read_site(path, path.parent.name, defaults, issues,
                      tenant.alerting if tenant is not None else None)
    issues.raise_if_any()
    assert site is not None
    return site


def load_inventory(root: str | Path, *, resolve_secrets: bool = True) -> Inventory:
    """Load every tenant and site below ``root``; raises :class:`ConfigError` listing all.

    ``resolve_secrets=False`` checks secret references without reading them.
    """
    root = Path(root)
    issues = IssueList(resolve_secrets=resolve_secrets)
    tenants: dict[str, Tenant] = {}
    sites: dict[tuple[str, str], Site] = {}
    if not root.is_dir():
        issues.add(None, "", "is not a directory", file=str(root))
        issues.raise_if_any()
    for tdir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        tenant_file = tdir / TENANT_FILE
        if not tenant_file.exists():
            issues.add(None, "", f"tenant directory without {TENANT_FILE}", file=str(tdir))
            continue
        tenant, defaults = _read_tenant(tenant_file, issues)
        if tenant is not None:
            tenants[tenant.id] = tenant
        for sfile in sorted(tdir.glob("*.yaml")):
            if sfile.name == TENANT_FILE:
                continue
            site = _read_site(sfile, tdir.name, defaults, issues,
                              tenant.alerting if tenant is not None else None)
            if site is not None:
                sites[(tdir.name, site.id)] = site
    issues.raise_if_any()
    return Inventory(tenants=tenants, sites=sites)


__all__ = [
    "AgentSettings",
    "AnsibleSettings",
    "BrokerSettings",
    "ConfigError",
    "Device",
    "InterfaceSettings",
    "Inventory",
    "Secret",
    "Site",
    "SnmpCredentials",
    "Tenant",
    "TenantAlerting",
    "Thresholds",
    "Uplink",
    "load_inventory",
    "load_site",
]
