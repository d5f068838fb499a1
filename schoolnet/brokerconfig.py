"""Mosquitto password file, ACL and listener config generated from ``site-configs/``.

``schoolnet broker-config --site-configs DIR --out DIR`` (a thin click layer over
:func:`generate`) writes three files for the broker:

* ``passwd``: one account per site (username = site id, or ``agent.broker.username``)
  plus the collector's account, hashed as Mosquitto 2 does (``$7$``: PBKDF2-SHA512, 101
  iterations, 12-byte salt; checked against ``mosquitto_passwd``);
* ``acl``: a site may write only below ``schoolnet/v1/<tenant>/<site>/`` and read
  nothing; the collector reads ``schoolnet/v1/#`` and writes nothing. Mosquitto denies
  everything an ACL file does not grant;
* ``schoolnet.conf``: no anonymous access, the two files above, broker durability and
  limits, and a TLS listener (server certificate; client certificates optional);
* ``listener.conf``: the listener part alone (for ``conf.d/``, as the Ansible role uses it).

Where passwords come from, per account, first match wins:

1. ``agent.broker.password`` of the site in the inventory (``{env: NAME}``,
   ``{file: PATH}`` or inline), the same value the site's agent uses;
2. the secrets file (``--secrets FILE``, YAML ``accounts: {username: password}``), which
   the operator keeps like a key store (mode 0600): missing accounts get a random
   password generated into it, so running the generator again keeps every password and
   adds new sites. The Ansible role hands each site box its entry.

Passwords never appear in output, logs, exceptions or ``repr``; the report names
accounts and where their password came from, nothing more.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import yaml

from schoolnet.configfile import ConfigError, Secret
from schoolnet.inventory import Inventory, load_inventory
from schoolnet.wire import TOPIC_ROOT, site_filter, tenant_filter

#: Mosquitto 2's defaults for ``$7$`` hashes (mosquitto_passwd: PW_DEFAULT_ITERATIONS).
HASH_ITERATIONS = 101
SALT_BYTES = 12
PASSWD_FILE, ACL_FILE, CONF_FILE = "passwd", "acl", "schoolnet.conf"
#: Listeners only: what the Ansible mosquitto role installs into conf.d (its main
#: mosquitto.conf sets the password file, the ACL and durability itself).
LISTENER_FILE = "listener.conf"


class BrokerConfigError(Exception):
    """The inventory or the options cannot give a complete, consistent broker config."""


def mosquitto_hash(password: str, *, salt: bytes | None = None,
                   iterations: int = HASH_ITERATIONS) -> str:
    """A Mosquitto 2 password-file hash: ``$7$<iterations>$<salt>$<pbkdf2-sha512>``."""
    salt = salt if salt is not None else os.urandom(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return (f"$7${iterations}${base64.b64encode(salt).decode()}$"
            f"{base64.b64encode(digest).decode()}")


@dataclass(frozen=True)
class Account:
    """One broker account: who, what it may do, and where its password came from."""

    username: str
    password: Secret = field(repr=False)
    origin: str  # "inventory (env:NAME)", "secrets file", "generated"
    tenant: str | None = None  # None: the collector
    site: str | None = None

    @property
    def write_filter(self) -> str | None:
        """The one topic filter this account may publish to (None: the collector)."""
        return site_filter(self.tenant, self.site) if self.tenant and self.site else None


@dataclass(frozen=True, kw_only=True)
class TlsListener:
    """A TLS listener: server certificate and key; CA for client certificates if required."""

    port: int = 8883
    host: str = "0.0.0.0"
    certfile: str
    keyfile: str
    cafile: str | None = None
    require_client_cert: bool = False


@dataclass
class Result:
    """What :func:`generate` wrote (no secrets in here)."""

    accounts: list[Account]
    files: list[Path]
    generated: int  # passwords generated into the secrets file


def _resolve(secret: Secret) -> str:
    """The value of a broker password reference (the inventory was read unresolved)."""
    kind, _, ref = secret.source.partition(":")
    if kind == "env":
        value = os.environ.get(ref, "")
        if not value:
            raise BrokerConfigError(f"environment variable {ref} is not set")
        return value
    if kind == "file":
        try:
            value = Path(ref).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise BrokerConfigError(f"cannot read password file {ref}: {exc.strerror}") from None
        if not value:
            raise BrokerConfigError(f"password file {ref} is empty")
        return value
    return secret.reveal()


def read_secrets(path: Path) -> dict[str, str]:
    """The ``accounts`` mapping of a secrets file (empty if the file does not exist)."""
    if not path.exists():
        return {}
    try:
        doc: Any = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        # Not the exception text: a YAML error quotes the line, which may be a password.
        raise BrokerConfigError(f"cannot read secrets file {path}: {type(exc).__name__}") from None
    accounts = doc.get("accounts") if isinstance(doc, dict) else None
    if not isinstance(accounts, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in accounts.items()):
        raise BrokerConfigError(f"{path}: expected 'accounts:' mapping usernames to passwords")
    return dict(accounts)


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (created so; never world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def accounts_for(inventory: Inventory, *, collector_user: str,
                 kept: Mapping[str, str]) -> tuple[list[Account], dict[str, str]]:
    """Every account with its password; returns them and the passwords newly generated."""
    out: list[Account] = []
    new: dict[str, str] = {}
    owners: dict[str, str] = {collector_user: "the collector"}

    def from_store(username: str) -> tuple[Secret, str]:
        if username in kept:
            return Secret(kept[username], "secrets-file"), "secrets file"
        new[username] = secrets.token_urlsafe(24)
        return Secret(new[username], "generated"), "generated"

    pw, origin = from_store(collector_user)
    out.append(Account(collector_user, pw, origin))
    for site in sorted(inventory, key=lambda s: (s.tenant, s.id)):
        b = site.agent.broker
        username = b.username or site.id
        where = f"{site.tenant}/{site.id}"
        if username in owners:
            raise BrokerConfigError(
                f"username {username!r} of {where} is also used by {owners[username]}; "
                "set agent.broker.username to make it unique")
        if ":" in username:
            raise BrokerConfigError(f"username {username!r} of {where} contains ':'")
        owners[username] = where
        if b.password is not None:
            pw, origin = Secret(_resolve(b.password), b.password.source), \
                f"inventory ({b.password.source})"
        else:
            pw, origin = from_store(username)
        out.append(Account(username, pw, origin, site.tenant, site.id))
    return out, new


def passwd_text(accounts: list[Account]) -> str:
    """The password file: ``username:hash`` lines."""
    return "".join(f"{a.username}:{mosquitto_hash(a.password.reveal())}\n" for a in accounts)


def acl_text(accounts: list[Account], *, source: str = "") -> str:
    """The ACL file: the collector reads everything, each site writes only its own topics."""
    lines = ["# Generated by `schoolnet broker-config`" + (f" from {source}" if source else "")
             + "; edit site-configs/ and run it again.",
             "# Anything not granted here is denied: sites read nothing, the collector",
             "# writes nothing.", ""]
    for a in accounts:
        if a.write_filter is None:
            lines += ["# The collector: reads every site's data and status.",
                      f"user {a.username}", f"topic read {tenant_filter()}", ""]
        else:
            lines += [f"# {a.tenant}/{a.site}", f"user {a.username}",
                      f"topic write {a.write_filter}", ""]
    return "\n".join(lines)


def listener_text(*, tls: TlsListener | None, plain: tuple[str, int] | None) -> str:
    """The listeners: TLS (server certificate, client certificates optional), plain."""
    lines = ["# Generated by `schoolnet broker-config` (docs/security.md).",
             "# Needs per_listener_settings false (the default): the password file and ACL",
             "# apply to every listener."]
    if plain is not None:
        lines += ["# Plain MQTT, for loopback or a trusted network only.",
                  f"listener {plain[1]} {plain[0]}"]
    if tls is not None:
        lines += [f"listener {tls.port} {tls.host}", f"certfile {tls.certfile}",
                  f"keyfile {tls.keyfile}", "tls_version tlsv1.2"]
        if tls.cafile:
            lines.append(f"cafile {tls.cafile}")
        lines.append(f"require_certificate {'true' if tls.require_client_cert else 'false'}")
    return "\n".join(lines) + "\n"


def conf_text(out: Path, *, tls: TlsListener | None, plain: tuple[str, int] | None) -> str:
    """Security, durability and listeners for mosquitto.conf (or its conf.d)."""
    lines = [
        "# Generated by `schoolnet broker-config` (docs/security.md).",
        "allow_anonymous false",
        f"password_file {out / PASSWD_FILE}",
        f"acl_file {out / ACL_FILE}",
        "# Queued messages (for a collector that is away) are saved every 5 s; agents keep",
        "# what the broker acknowledged for 30 s and send it again after a reconnect, so a",
        "# broker killed between two saves loses nothing (docs/security.md, durability).",
        "autosave_interval 5",
        "max_queued_messages 100000",
        "# Payloads are at most 512 KiB (wire.Limits); bigger packets are refused outright.",
        "max_packet_size 1048576",
    ]
    return "\n".join(lines) + "\n" + listener_text(tls=tls, plain=plain)


def generate(site_configs: str | Path, out: str | Path, *, secrets_file: str | Path | None,
             collector_user: str = "collector", tls: TlsListener | None = None,
             plain: tuple[str, int] | None = None) -> Result:
    """Write ``passwd``, ``acl``, ``schoolnet.conf``, ``listener.conf`` below ``out``."""
    out = Path(out).resolve()
    if tls is None and plain is None:
        raise BrokerConfigError("no listener: give a TLS certificate and key, or a plain port")
    if tls is not None and tls.require_client_cert and not tls.cafile:
        raise BrokerConfigError("client certificates need the CA that signs them (--cafile)")
    inventory = load_inventory(site_configs, resolve_secrets=False)
    store = Path(secrets_file) if secrets_file is not None else None
    kept = read_secrets(store) if store is not None else {}
    accounts, new = accounts_for(inventory, collector_user=collector_user, kept=kept)
    if new and store is None:
        missing = ", ".join(sorted(new))
        raise BrokerConfigError(f"no password for {missing}: set agent.broker.password in "
                                "the site config, or give --secrets FILE to keep generated ones")
    files = []
    if store is not None and new:
        doc = {"accounts": {**kept, **new}}
        write_private(store, "# schoolnet broker accounts: keep this file secret.\n"
                      + yaml.safe_dump(doc, sort_keys=True))
        files.append(store)
    out.mkdir(parents=True, exist_ok=True)
    write_private(out / PASSWD_FILE, passwd_text(accounts))
    (out / ACL_FILE).write_text(acl_text(accounts, source=str(site_configs)), encoding="utf-8")
    (out / CONF_FILE).write_text(conf_text(out, tls=tls, plain=plain), encoding="utf-8")
    (out / LISTENER_FILE).write_text(listener_text(tls=tls, plain=plain), encoding="utf-8")
    files += [out / PASSWD_FILE, out / ACL_FILE, out / CONF_FILE, out / LISTENER_FILE]
    return Result(accounts=accounts, files=files, generated=len(new))


@click.command("broker-config")
@click.option("--site-configs", "site_configs", required=True,
              type=click.Path(exists=True, file_okay=False), help="The inventory directory.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Directory for passwd, acl, schoolnet.conf and listener.conf.")
@click.option("--secrets", "secrets_file", type=click.Path(dir_okay=False),
              help="YAML file that keeps generated passwords (created 0600; keep it secret).")
@click.option("--collector-user", default="collector", show_default=True)
@click.option("--tls-port", type=int, default=8883, show_default=True)
@click.option("--bind", default="0.0.0.0", show_default=True, help="Listen address.")
@click.option("--certfile", type=click.Path(dir_okay=False), help="Server certificate (PEM).")
@click.option("--keyfile", type=click.Path(dir_okay=False), help="Server key (PEM).")
@click.option("--cafile", type=click.Path(dir_okay=False),
              help="CA for client certificates (with --require-client-cert).")
@click.option("--require-client-cert", is_flag=True)
@click.option("--plain-port", type=int, default=None,
              help="Also a plain MQTT listener (loopback or trusted networks only).")
def broker_config_command(site_configs: str, out: str, secrets_file: str | None,
                          collector_user: str, tls_port: int, bind: str, certfile: str | None,
                          keyfile: str | None, cafile: str | None, require_client_cert: bool,
                          plain_port: int | None) -> None:
    """Generate the broker's password file, ACL and listener config from the inventory."""
    tls = None
    if certfile or keyfile:
        if not (certfile and keyfile):
            raise click.UsageError("--certfile and --keyfile go together")
        tls = TlsListener(port=tls_port, host=bind, certfile=str(Path(certfile).resolve()),
                          keyfile=str(Path(keyfile).resolve()),
                          cafile=str(Path(cafile).resolve()) if cafile else None,
                          require_client_cert=require_client_cert)
    try:
        result = generate(site_configs, out, secrets_file=secrets_file,
                          collector_user=collector_user, tls=tls,
                          plain=(bind, plain_port) if plain_port else None)
    except (BrokerConfigError, ConfigError) as exc:
        click.echo(f"schoolnet broker-config: {exc}", err=True)
        sys.exit(1)
    for a in result.accounts:
        what = f"writes {a.write_filter}" if a.write_filter else f"reads {TOPIC_ROOT}/#"
        click.echo(f"account {a.username}: {what}; password from {a.origin}")
    for f in result.files:
        click.echo(f"wrote {f}")
    if result.generated:
        click.echo(f"{result.generated} new password(s) generated into {secrets_file}")
