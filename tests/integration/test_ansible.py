"""The Ansible roles: lint, syntax, and a real converge on this machine (``-c local``).

The converge deploys the ``mosquitto`` role and the ``schoolnet_agent`` role of one site
through ``ansible/site.yml`` with the inventory from ``schoolnet ansible-inventory``, into
a throw-away prefix below tmp (systemd is not asked to do anything: ``*_manage_service``
is off). Then it checks what a real box would run: the agent's config passes
``schoolnet config check``, its unit passes ``systemd-analyze verify``, the broker starts
with the deployed config and refuses a cross-site publish, and the unit's ExecStart,
started by hand, brings the agent online at that broker. A second run changes nothing.

The broker files (password file, ACL, listener) come from the real broker-config
generator (``schoolnet.brokerconfig.generate``): one user per site, which may write only
below its own ``schoolnet/v1/<tenant>/<site>/``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from schoolnet.brokerconfig import generate
from schoolnet.sim.servers import ManagedProcess, _tcp_open, free_port, wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
BIN = Path(sys.executable).parent
PLAYBOOK = BIN / "ansible-playbook"

if not PLAYBOOK.exists():  # pragma: no cover - ansible-core is in the test extra
    pytest.skip("ansible-core is not installed (pip install -e '.[test]')",
                allow_module_level=True)


def ansible_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
        "ANSIBLE_HOME": str(tmp / "ansible-home"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "SCHOOLNET": str(BIN / "schoolnet"),
    })
    env.update(extra)
    return env


def run(cmd: list[str], *, env: dict[str, str], timeout: float = 240,
        cwd: Path = ANSIBLE_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_ansible_lint_production_profile_is_clean(tmp_path: Path) -> None:
    res = run([str(BIN / "ansible-lint"), "--offline", "--nocolor", "--profile", "production"],
              env=ansible_env(tmp_path))
    assert res.returncode == 0, res.stdout + res.stderr


def test_site_yml_syntax_check_with_the_inventory_from_site_configs(tmp_path: Path) -> None:
    env = ansible_env(tmp_path, SCHOOLNET_SITE_CONFIGS=str(REPO / "site-configs"))
    res = run([str(PLAYBOOK), "--syntax-check", "-i", "inventory/sites", "-i", "inventory/noc.yml",
               "site.yml"], env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    res = run([str(BIN / "ansible-inventory"), "-i", "inventory/sites", "--graph"], env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "@tenant_herne:" in res.stdout and "gy-pestalozzi.herne" in res.stdout


# --- the converge -------------------------------------------------------------------

TENANT = """\
tenant: herne
name: Stadt Herne
defaults:
  agent:
    poll_interval_s: 5
    broker: {{host: 127.0.0.1, port: {port}, password: {{env: SCHOOLNET_MQTT_PASSWORD}}}}
  snmp: {{version: 2c, community: {{env: HERNE_SNMP_COMMUNITY}}}}
"""

SITE = """\
site: {sid}
name: School {sid}
ansible: {{host: 127.0.0.1}}
devices:
  # Nobody answers SNMP here; the agent reports the device unreachable, on loopback only.
  - {{name: router, host: 127.0.0.1, port: {snmp_port}, role: router}}
"""

PASSWORDS = {"gy-a": "pw-gy-a-0123", "gs-b": "pw-gs-b-4567", "collector": "pw-coll-89ab"}


@dataclass
class Converge:
    root: Path          # the throw-away prefix
    broker_port: int
    first: subprocess.CompletedProcess[str]
    second: subprocess.CompletedProcess[str]
    first_s: float
    second_s: float

    @property
    def agent_config_dir(self) -> Path:
        return self.root / "etc/schoolnet-agent"

    @property
    def unit(self) -> Path:
        return self.root / "etc/systemd/system/schoolnet-agent.service"

    @property
    def mosquitto_conf(self) -> Path:
        return self.root / "etc/mosquitto/mosquitto.conf"


def write_broker_config(configs: Path, out: Path, port: int) -> None:
    """The broker files from the real generator (`schoolnet broker-config`), as in production.

    The NOC keeps the site passwords in the generator's secrets file; each box gets its
    own from ansible-vault. So the generator runs on the NOC's copy of the inventory,
    without the boxes' ``{env: ...}`` password reference.
    """
    noc = out.parent / "noc-site-configs"
    shutil.copytree(configs, noc)
    tenant = noc / "herne" / "tenant.yaml"
    tenant.write_text(tenant.read_text().replace(
        ", password: {env: SCHOOLNET_MQTT_PASSWORD}", ""))
    secrets = out.parent / "broker-secrets.yaml"
    secrets.write_text(yaml.safe_dump({"accounts": PASSWORDS}))
    generate(noc, out, secrets_file=secrets, plain=("127.0.0.1", port))


def recap(output: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP as {host: {ok: n, changed: n, ...}}."""
    out: dict[str, dict[str, int]] = {}
    for host, counts in re.findall(r"^(\S+)\s+:\s+(ok=.*)$", output, re.M):
        out[host] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", counts)}
    return out


@pytest.fixture(scope="module")
def converge(tmp_path_factory: pytest.TempPathFactory) -> Converge:
    tmp = tmp_path_factory.mktemp("converge")
    root = tmp / "root"
    port = free_port()
    snmp_port = free_port(kind=socket.SOCK_DGRAM)
    configs = tmp / "site-configs"
    (configs / "herne").mkdir(parents=True)
    (configs / "herne" / "tenant.yaml").write_text(TENANT.format(port=port))
    for sid in ("gy-a", "gs-b"):
        (configs / "herne" / f"{sid}.yaml").write_text(SITE.format(sid=sid, snmp_port=snmp_port))
    write_broker_config(configs, tmp / "broker-config", port)
    # The package and its dependencies as wheels: the role installs the repo's committed
    # code (git archive HEAD: no half-done work of the working tree, no build/ in the
    # checkout) from this directory only (--no-index); pip's cache makes it a few seconds.
    src = tmp / "src"
    src.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", "HEAD"],
                             capture_output=True, check=False)
    if archive.returncode == 0:
        subprocess.run(["tar", "-x", "-C", str(src)], input=archive.stdout, check=True)
    else:  # not a git checkout: the tree as it is
        shutil.copytree(REPO, src, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info"))
    wheels = tmp / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "-w", str(wheels), str(src)],
                   check=True, capture_output=True, timeout=300)
    (tmp / "noc.yml").write_text("all:\n  children:\n    broker:\n      hosts:\n        noc.test:\n"
                                  "    collector:\n      hosts:\n        noc.test:\n")
    user = "root" if os.getuid() == 0 else os.environ.get("USER", "nobody")
    extra = {
        "ansible_python_interpreter": sys.executable,
        "schoolnet_agent_pip_extra_args": f"--no-index --find-links {wheels}",
        "schoolnet_agent_system_packages": [],
        "schoolnet_agent_python": sys.executable,
        # One venv for both programs here: the second role finds the package installed.
        "schoolnet_agent_install_dir": f"{root}/opt/schoolnet",
        "schoolnet_agent_config_dir": f"{root}/etc/schoolnet-agent",
        "schoolnet_agent_systemd_dir": f"{root}/etc/systemd/system",
        "schoolnet_agent_system_user": user,
        "schoolnet_agent_system_group": user,
        "schoolnet_agent_create_user": False,
        "schoolnet_agent_manage_service": False,
        "schoolnet_agent_secrets": {"SCHOOLNET_MQTT_PASSWORD": PASSWORDS["gy-a"],
                                    "HERNE_SNMP_COMMUNITY": "public"},
        "schoolnet_collector_pip_extra_args": f"--no-index --find-links {wheels}",
        "schoolnet_collector_system_packages": [],
        "schoolnet_collector_python": sys.executable,
        "schoolnet_collector_install_dir": f"{root}/opt/schoolnet",
        "schoolnet_collector_config_dir": f"{root}/etc/schoolnet-collector",
        "schoolnet_collector_systemd_dir": f"{root}/etc/systemd/system",
        "schoolnet_collector_system_user": user,
        "schoolnet_collector_system_group": user,
        "schoolnet_collector_create_user": False,
        "schoolnet_collector_manage_service": False,
        "schoolnet_collector_site_configs": str(configs),
        "schoolnet_collector_mqtt_port": port,
        "schoolnet_collector_mqtt_password": PASSWORDS["collector"],
        # No influxdb host here: site.yml falls back to this (the path of an external InfluxDB).
        "schoolnet_influx_write_token": "test-write-token",
        "mosquitto_broker_config_dir": str(tmp / "broker-config"),
        "mosquitto_packages": [],
        "mosquitto_config_dir": f"{root}/etc/mosquitto",
        "mosquitto_data_dir": f"{root}/var/lib/mosquitto/",
        "mosquitto_user": user,
        "mosquitto_group": user,
        "mosquitto_manage_service": False,
    }
    (tmp / "vars.json").write_text(json.dumps(extra))
    env = ansible_env(tmp, SCHOOLNET_SITE_CONFIGS=str(configs))
    cmd = [str(PLAYBOOK), "-i", "inventory/sites", "-i", str(tmp / "noc.yml"), "-c", "local",
           "-e", f"@{tmp / 'vars.json'}", "--limit", "broker:collector:gy-a.herne", "site.yml"]
    t0 = time.monotonic()
    first = run(cmd, env=env)
    t1 = time.monotonic()
    second = run(cmd, env=env)
    t2 = time.monotonic()
    print(f"converge: first run {t1 - t0:.1f} s, second run {t2 - t1:.1f} s")
    return Converge(root=root, broker_port=port, first=first, second=second,
                    first_s=t1 - t0, second_s=t2 - t1)


def test_converge_succeeds_and_a_second_run_changes_nothing(converge: Converge) -> None:
    assert converge.first.returncode == 0, converge.first.stdout[-6000:] + converge.first.stderr
    assert converge.second.returncode == 0, converge.second.stdout[-6000:]
    first, second = recap(converge.first.stdout), recap(converge.second.stdout)
    assert set(first) == {"noc.test", "gy-a.herne"}
    assert first["gy-a.herne"]["changed"] > 0 and first["noc.test"]["changed"] > 0
    assert {h: c["changed"] for h, c in second.items()} == {"noc.test": 0, "gy-a.herne": 0}, \
        converge.second.stdout[-6000:]
    assert all(c["failed"] == 0 and c["unreachable"] == 0 and c["rescued"] == 0
               for c in second.values())


def read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            env[name] = json.loads(value)
    return env


def test_the_agent_venv_and_config_pass_schoolnet_config_check(converge: Converge) -> None:
    assert converge.first.returncode == 0
    schoolnet = converge.root / "opt/schoolnet/bin/schoolnet"
    res = subprocess.run([str(schoolnet), "--version"], capture_output=True, text=True, check=False)
    assert res.returncode == 0 and "0.1.0" in res.stdout
    env_file = converge.agent_config_dir / "agent.env"
    assert env_file.stat().st_mode & 0o777 == 0o600
    env = {**os.environ, **read_env_file(env_file)}
    res = subprocess.run([str(schoolnet), "config", "check",
                          str(converge.agent_config_dir / "site-configs")],
                         env=env, capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    assert "ok: 1 tenant(s), 1 site(s), 1 device(s)" in res.stdout


def test_the_units_pass_systemd_analyze_verify_and_are_hardened(converge: Converge) -> None:
    assert converge.first.returncode == 0
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    for unit in (converge.unit, converge.unit.with_name("schoolnet-collector.service")):
        res = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                             capture_output=True, text=True, check=False)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "Unknown" not in res.stderr and "ignoring" not in res.stderr, res.stderr
    unit = converge.unit.read_text()
    for line in ("AmbientCapabilities=CAP_NET_RAW", "CapabilityBoundingSet=CAP_NET_RAW",
                 "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
                 "PrivateTmp=yes", "StateDirectory=schoolnet-agent", "Restart=on-failure",
                 "StandardOutput=journal"):
        assert f"\n{line}\n" in unit, line


def test_the_collector_config_loads_with_its_deployed_secrets(
        converge: Converge, monkeypatch: pytest.MonkeyPatch) -> None:
    from collector.config import load_config

    assert converge.first.returncode == 0
    cdir = converge.root / "etc/schoolnet-collector"
    for name, value in read_env_file(cdir / "collector.env").items():
        monkeypatch.setenv(name, value)
    cfg = load_config(cdir / "collector.yaml")
    assert (cfg.mqtt.port, cfg.mqtt.username) == (converge.broker_port, "collector")
    assert cfg.mqtt.password is not None and cfg.mqtt.password.reveal() == PASSWORDS["collector"]
    assert cfg.influx.token is not None and cfg.influx.token.reveal() == "test-write-token"
    assert Path(cfg.inventory) == cdir / "site-configs"
    assert cfg.state_dir == "/var/lib/schoolnet-collector"


class DeployedMosquitto(ManagedProcess):
    """Mosquitto started with exactly the config the role deployed."""

    name = "mosquitto-deployed"

    def __init__(self, workdir: Path, conf: Path, port: int) -> None:
        super().__init__(workdir)
        self.conf, self.port = conf, port

    def command(self) -> list[str]:
        return [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(self.conf)]

    def is_ready(self) -> bool:
        return _tcp_open("127.0.0.1", self.port)


class Watcher:
    """The collector's view: subscribed to schoolnet/v1/#, every message kept."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-collector",
                                  protocol=mqtt.MQTTv5)
        self.client.username_pw_set("collector", PASSWORDS["collector"])
        self.client.on_connect = lambda c, *a: c.subscribe("schoolnet/v1/#", qos=1)
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def topics(self) -> list[str]:
        with self.lock:
            return [t for t, _ in self.messages]

    def payloads(self, topic: str) -> list[bytes]:
        with self.lock:
            return [p for t, p in self.messages if t == topic]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def broker(converge: Converge, tmp_path: Path) -> Iterator[DeployedMosquitto]:
    assert converge.first.returncode == 0
    with DeployedMosquitto(tmp_path, converge.mosquitto_conf, converge.broker_port) as b:
        yield b  # type: ignore[misc]


def publish(port: int, user: str, password: str, topic: str) -> int:
    """Publish one QoS 1 message as ``user``; the MQTT 5 PUBACK reason code."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    done = threading.Event()
    codes: list[int] = []
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{user}",
                    protocol=mqtt.MQTTv5)
    c.username_pw_set(user, password)

    def on_publish(client: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        codes.append(int(rc.value))
        done.set()

    c.on_publish = on_publish
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        c.publish(topic, b"{}", qos=1)
        assert done.wait(10), f"no PUBACK for {topic}"
    finally:
        c.loop_stop()
        c.disconnect()
    return codes[0]


def test_the_deployed_broker_refuses_a_cross_site_publish(broker: DeployedMosquitto) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    watcher = Watcher(broker.port)
    try:
        assert watcher.subscribed.wait(10)
        own, foreign = "schoolnet/v1/herne/gy-a/event", "schoolnet/v1/herne/gs-b/event"
        # gy-a writes into gs-b's subtree first, then into its own: when its own message
        # has arrived, the foreign one would have arrived before it.
        assert publish(broker.port, "gy-a", PASSWORDS["gy-a"], foreign) == 0x87  # not authorized
        assert publish(broker.port, "gy-a", PASSWORDS["gy-a"], own) == 0
        wait_for(lambda: own in watcher.topics(), 10, "gy-a's own message")
        assert foreign not in watcher.topics()
        # A wrong password does not get in at all.
        refused = threading.Event()
        reasons: list[int] = []
        bad = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-bad",
                          protocol=mqtt.MQTTv5)
        bad.username_pw_set("gy-a", "wrong")

        def on_connect(client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
            reasons.append(int(rc.value))
            refused.set()

        bad.on_connect = on_connect
        bad.connect("127.0.0.1", broker.port)
        bad.loop_start()
        try:
            assert refused.wait(10), "no CONNACK"
        finally:
            bad.loop_stop()
        assert reasons[0] in (0x86, 0x87), reasons  # bad user name or password / not authorized
    finally:
        watcher.close()


def exec_start(unit: Path) -> list[str]:
    line = next(x for x in unit.read_text().splitlines() if x.startswith("ExecStart="))
    return shlex.split(line.removeprefix("ExecStart="))


def test_the_units_execstart_brings_the_agent_online_at_the_deployed_broker(
        converge: Converge, broker: DeployedMosquitto, tmp_path: Path) -> None:
    state = tmp_path / "state"  # what systemd would create for StateDirectory=
    state.mkdir()
    argv = [a.replace("${STATE_DIRECTORY}", str(state)) for a in exec_start(converge.unit)]
    env = {**os.environ, **read_env_file(converge.agent_config_dir / "agent.env")}
    watcher = Watcher(broker.port)
    log = (tmp_path / "agent.log").open("wb")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    status = "schoolnet/v1/herne/gy-a/status"
    try:
        assert watcher.subscribed.wait(10)

        def online() -> bool:
            assert proc.poll() is None, (tmp_path / "agent.log").read_text()
            return any(json.loads(p).get("state") == "online" for p in watcher.payloads(status))

        wait_for(online, 60, "the agent's retained online status")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, (tmp_path / "agent.log").read_text()
        wait_for(lambda: json.loads(watcher.payloads(status)[-1]).get("state") == "offline",
                 10, "the agent's offline status at shutdown")
        assert any(state.iterdir()), "the spool lives in the state directory"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        log.close()
        watcher.close()


def test_a_failed_site_does_not_stop_the_rollout_of_the_others(tmp_path: Path) -> None:
    """gs-b is unreachable (ssh to a closed loopback port), gy-a is local: gy-a is still
    deployed (here: its preflight), and the run fails at the end naming gs-b."""
    configs = tmp_path / "site-configs"
    (configs / "herne").mkdir(parents=True)
    (configs / "herne" / "tenant.yaml").write_text(TENANT.format(port=1883))
    closed = free_port()
    (configs / "herne" / "gs-b.yaml").write_text(
        SITE.format(sid="gs-b", snmp_port=161).replace("{host: 127.0.0.1}",
                                                       f"{{host: 127.0.0.1, port: {closed}}}"))
    (configs / "herne" / "gy-a.yaml").write_text(SITE.format(sid="gy-a", snmp_port=161))
    local = tmp_path / "local.yml"
    local.write_text("all:\n  hosts:\n    gy-a.herne:\n      ansible_connection: local\n"
                     f"      ansible_python_interpreter: {sys.executable}\n")
    env = ansible_env(tmp_path, SCHOOLNET_SITE_CONFIGS=str(configs))
    res = run([str(PLAYBOOK), "-i", "inventory/sites", "-i", str(local), "--limit", "sites",
               "--tags", "preflight", "-e", "schoolnet_sites_connect_timeout=3", "site.yml"],
              env=env)
    out = res.stdout
    assert res.returncode != 0, out
    assert "1 site(s) failed: gs-b.herne: Wait for the site box" in out, out
    counts = recap(out)
    assert counts["gs-b.herne"]["rescued"] == 1
    assert counts["gy-a.herne"]["rescued"] == 0
    # gs-b came first (one site per batch), and gy-a's batch still ran.
    assert out.index("[gs-b.herne]") < out.index("ok: [gy-a.herne]")
    assert re.search(r"TASK \[schoolnet_agent : Check that the tenant.yaml.*\n(ok|skipping): \[gy-a\.herne\]", out), out
