"""schoolnet broker-config: Mosquitto hashes, accounts and password sources, the ACL,
the listener config, and secrets that never show up in output, files or repr."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from schoolnet.brokerconfig import (
    BrokerConfigError,
    TlsListener,
    broker_config_command,
    generate,
    mosquitto_hash,
    read_secrets,
)
from tests.collector_support import write_inventory


def inventory(root: Path) -> Path:
    write_inventory(root, "herne", {"gy-a": [("sw", "switch", "")], "gs-b": [("ap", "ap", "")]})
    write_inventory(root, "bochum", {"rs-c": [("sw", "switch", "")]})
    return root


def check_hash(line: str, password: str) -> bool:
    _, _, iterations, salt, digest = line.split("$")
    got = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(salt),
                              int(iterations), 64)
    return base64.b64encode(got).decode() == digest


def test_hash_is_mosquitto_2_pbkdf2_sha512_with_a_fresh_salt() -> None:
    h = mosquitto_hash("s3cret", salt=b"\x00" * 12)
    assert h.startswith("$7$101$AAAAAAAAAAAAAAAA$") and check_hash(h, "s3cret")
    assert not check_hash(h, "s3cret ")
    assert mosquitto_hash("x") != mosquitto_hash("x")  # salted


def test_accounts_acl_and_conf_from_the_inventory(tmp_path: Path) -> None:
    inv = inventory(tmp_path / "inv")
    res = generate(inv, tmp_path / "out", secrets_file=tmp_path / "secrets.yaml",
                   plain=("127.0.0.1", 1883))
    assert [a.username for a in res.accounts] == ["collector", "rs-c", "gs-b", "gy-a"]
    assert res.generated == 4
    kept = read_secrets(tmp_path / "secrets.yaml")
    passwd = dict(line.split(":", 1) for line in (tmp_path / "out/passwd").read_text().split())
    assert set(passwd) == set(kept) and all(check_hash(passwd[u], kept[u]) for u in kept)
    acl = (tmp_path / "out/acl").read_text()
    assert "user collector\ntopic read schoolnet/v1/#\n" in acl
    assert "user gy-a\ntopic write schoolnet/v1/herne/gy-a/#\n" in acl
    assert "user rs-c\ntopic write schoolnet/v1/bochum/rs-c/#\n" in acl
    assert "topic read schoolnet/v1/herne" not in acl and acl.count("topic read") == 1
    conf = (tmp_path / "out/schoolnet.conf").read_text()
    assert "allow_anonymous false" in conf and f"acl_file {tmp_path / 'out/acl'}" in conf
    assert "listener 1883 127.0.0.1" in conf


def test_running_again_keeps_every_password_and_adds_new_sites(tmp_path: Path) -> None:
    inv = inventory(tmp_path / "inv")
    generate(inv, tmp_path / "out", secrets_file=tmp_path / "s.yaml", plain=("127.0.0.1", 1))
    first = read_secrets(tmp_path / "s.yaml")
    write_inventory(inv, "herne", {"gy-new": [("sw", "switch", "")]})
    res = generate(inv, tmp_path / "out", secrets_file=tmp_path / "s.yaml",
                   plain=("127.0.0.1", 1))
    second = read_secrets(tmp_path / "s.yaml")
    assert res.generated == 1 and {k: second[k] for k in first} == first
    assert "gy-new" in second


def test_a_site_password_in_the_inventory_wins_and_is_resolved(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inv = inventory(tmp_path / "inv")
    site = inv / "herne" / "gy-a.yaml"
    site.write_text(site.read_text() + "agent:\n  broker:\n    password: {env: GY_A_MQTT}\n")
    monkeypatch.setenv("GY_A_MQTT", "from-the-environment")
    res = generate(inv, tmp_path / "out", secrets_file=tmp_path / "s.yaml",
                   plain=("127.0.0.1", 1))
    gy = next(a for a in res.accounts if a.username == "gy-a")
    assert gy.password.reveal() == "from-the-environment" and gy.origin == "inventory (env:GY_A_MQTT)"
    assert "gy-a" not in read_secrets(tmp_path / "s.yaml")
    monkeypatch.delenv("GY_A_MQTT")
    with pytest.raises(BrokerConfigError, match="GY_A_MQTT is not set"):
        generate(inv, tmp_path / "out", secrets_file=tmp_path / "s.yaml", plain=("127.0.0.1", 1))


def test_problems_are_clear_errors(tmp_path: Path) -> None:
    inv = inventory(tmp_path / "inv")
    with pytest.raises(BrokerConfigError, match="no password for collector, gs-b, gy-a, rs-c"):
        generate(inv, tmp_path / "out", secrets_file=None, plain=("127.0.0.1", 1))
    with pytest.raises(BrokerConfigError, match="no listener"):
        generate(inv, tmp_path / "out", secrets_file=tmp_path / "s.yaml")
    write_inventory(inv, "bochum", {"gy-a": [("sw", "switch", "")]})  # same id, two tenants
    with pytest.raises(BrokerConfigError, match="'gy-a' of herne/gy-a is also used by bochum/gy-a"):
        generate(inv, tmp_path / "out", secrets_file=tmp_path / "s.yaml", plain=("127.0.0.1", 1))


def test_tls_listener_with_optional_client_certificates(tmp_path: Path) -> None:
    inv = inventory(tmp_path / "inv")
    tls = TlsListener(port=8883, certfile="/etc/s/server.pem", keyfile="/etc/s/server.key",
                      cafile="/etc/s/ca.pem", require_client_cert=True)
    generate(inv, tmp_path / "out", secrets_file=tmp_path / "s.yaml", tls=tls)
    conf = (tmp_path / "out/schoolnet.conf").read_text()
    assert "listener 8883 0.0.0.0\ncertfile /etc/s/server.pem\nkeyfile /etc/s/server.key" in conf
    assert "cafile /etc/s/ca.pem\nrequire_certificate true" in conf
    assert "listener 1883" not in conf  # no plain listener unless asked for
    listener = (tmp_path / "out/listener.conf").read_text()  # for the Ansible role's conf.d
    assert "listener 8883 0.0.0.0" in listener and "password_file" not in listener
    with pytest.raises(BrokerConfigError, match="need the CA"):
        generate(inv, tmp_path / "out", secrets_file=tmp_path / "s.yaml",
                 tls=TlsListener(certfile="c", keyfile="k", require_client_cert=True))


def test_secrets_never_show_in_output_repr_or_readable_files(tmp_path: Path) -> None:
    inv = inventory(tmp_path / "inv")
    result = CliRunner().invoke(broker_config_command, [
        "--site-configs", str(inv), "--out", str(tmp_path / "out"),
        "--secrets", str(tmp_path / "s.yaml"), "--plain-port", "1883", "--bind", "127.0.0.1"])
    assert result.exit_code == 0, result.output
    kept = read_secrets(tmp_path / "s.yaml")
    assert len(kept) == 4
    for pw in kept.values():
        assert pw not in result.output
        assert pw not in (tmp_path / "out/passwd").read_text()  # hashed
        assert pw not in (tmp_path / "out/acl").read_text()
    assert "account gy-a: writes schoolnet/v1/herne/gy-a/#; password from generated" in result.output
    for private in (tmp_path / "s.yaml", tmp_path / "out/passwd"):
        assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    res = generate(inv, tmp_path / "out", secrets_file=tmp_path / "s.yaml",
                   plain=("127.0.0.1", 1))
    assert all(pw not in repr(res) for pw in kept.values())


def test_a_broken_secrets_file_does_not_echo_its_content(tmp_path: Path) -> None:
    bad = tmp_path / "s.yaml"
    bad.write_text("accounts: {gy-a: 'hunter2\n")
    with pytest.raises(BrokerConfigError) as exc:
        read_secrets(bad)
    assert "hunter2" not in str(exc.value)
    bad.write_text(yaml.safe_dump({"accounts": {"gy-a": 5}}))
    with pytest.raises(BrokerConfigError, match="expected 'accounts:'"):
        read_secrets(bad)


def test_a_client_certificate_needs_both_files(tmp_path: Path) -> None:
    from schoolnet.configfile import ConfigError
    from schoolnet.inventory import load_site

    inv = inventory(tmp_path / "inv")
    site = inv / "herne" / "gy-a.yaml"
    site.write_text(site.read_text() + "agent:\n  broker:\n    tls: true\n"
                    "    cert_file: /etc/schoolnet/site.pem\n")
    with pytest.raises(ConfigError, match=r"agent\.broker\.cert_file: give both cert_file and key_file"):
        load_site(site)
    site.write_text(site.read_text() + "    key_file: /etc/schoolnet/site.key\n")
    assert load_site(site).agent.broker.key_file == "/etc/schoolnet/site.key"
