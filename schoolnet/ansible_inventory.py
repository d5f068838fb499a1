"""The Ansible inventory of the school sites, derived from ``site-configs/``.

``site-configs/`` is the only list of sites: the agent, the collector and Ansible all read
it, so a site is never listed twice. :func:`build_inventory` turns it into the JSON that
Ansible's ``script`` inventory plugin expects (``ansible-inventory --list`` format)::

    {
      "_meta": {"hostvars": {"gy-pestalozzi.herne": {"schoolnet_site": ..., ...}}},
      "all": {"children": ["sites"]},
      "sites": {"children": ["tenant_herne"]},
      "tenant_herne": {"hosts": ["gy-pestalozzi.herne"]}
    }

One host per site, named ``<site>.<tenant>`` (site ids are unique per tenant only), in a
group ``tenant_<tenant>`` ('-' becomes '_': Ansible group names are identifiers) below
the group ``sites``. Host variables: ``schoolnet_tenant``, ``schoolnet_site``,
``schoolnet_site_name``, ``schoolnet_site_config`` and ``schoolnet_tenant_config``
(absolute paths of the site file and its tenant.yaml), and ``ansible_host``,
``ansible_user``, ``ansible_port`` from the site's optional ``ansible:`` block (tenant
``defaults.ansible`` first). Secrets are not read: the controller does not need them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from schoolnet.configfile import ConfigError, IssueList
from schoolnet.inventory import TENANT_FILE, Site, load_inventory

SITES_GROUP = "sites"


def host_name(site: Site) -> str:
    """The Ansible host name of a site: ``<site>.<tenant>``."""
    return f"{site.id}.{site.tenant}"


def group_name(tenant: str) -> str:
    """The Ansible group of a tenant's sites: ``tenant_<tenant>`` with '-' as '_'."""
    return "tenant_" + tenant.replace("-", "_")


def host_vars(site: Site) -> dict[str, Any]:
    """The variables of one site's host."""
    source = Path(site.source).resolve()
    hv: dict[str, Any] = {
        "schoolnet_tenant": site.tenant,
        "schoolnet_site": site.id,
        "schoolnet_site_name": site.name,
        "schoolnet_site_config": str(source),
        "schoolnet_tenant_config": str(source.parent / TENANT_FILE),
    }
    if site.ansible.host is not None:
        hv["ansible_host"] = site.ansible.host
    if site.ansible.user is not None:
        hv["ansible_user"] = site.ansible.user
    if site.ansible.port is not None:
        hv["ansible_port"] = site.ansible.port
    return hv


def build_inventory(root: str | Path) -> dict[str, Any]:
    """The ``--list`` JSON of every site below ``root``; raises :class:`ConfigError`."""
    inv = load_inventory(root, resolve_secrets=False)
    out: dict[str, Any] = {"_meta": {"hostvars": {}}}
    groups: dict[str, list[str]] = {}
    owner: dict[str, str] = {}
    issues = IssueList()
    for site in inv:
        group = group_name(site.tenant)
        if owner.setdefault(group, site.tenant) != site.tenant:
            issues.add(None, "tenant", f"tenants {owner[group]!r} and {site.tenant!r} both "
                       f"map to the Ansible group {group!r}; rename one", file=site.source)
            continue
        groups.setdefault(group, []).append(host_name(site))
        out["_meta"]["hostvars"][host_name(site)] = host_vars(site)
    issues.raise_if_any()
    out["all"] = {"children": [SITES_GROUP]}
    out[SITES_GROUP] = {"children": sorted(groups)}
    for group, hosts in sorted(groups.items()):
        out[group] = {"hosts": sorted(hosts)}
    return out


__all__ = ["SITES_GROUP", "ConfigError", "build_inventory", "group_name", "host_name",
           "host_vars"]
