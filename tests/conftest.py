"""Shared fixtures: real servers on loopback, each test with its own names and ports."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from schoolnet.sim.servers import Mosquitto, VictoriaMetrics

SHARED_DUMPS = Path(__file__).resolve().parents[2] / "shared" / "snmp-dumps"
_addr_counter = itertools.count(1)


def pytest_configure(config: pytest.Config) -> None:
    """Markers of tests that are worth finding by name."""
    config.addinivalue_line(
        "markers", "fault_injection: the SIGKILL-everything run of issue 6 (about 2 minutes)")


def shared_dump(name: str) -> Path:
    """A real recording from ../shared/snmp-dumps, or skip the test where it is absent."""
    path = SHARED_DUMPS / name
    if not path.exists():
        pytest.skip(f"{path} is absent (fresh clone without ../shared): real-device dump needed")
    return path


def loopback_address() -> str:
    """A loopback address no other test in this run uses (127.<pid-derived>.x.y)."""
    n = next(_addr_counter)
    return f"127.{100 + os.getpid() % 100}.{n // 250}.{n % 250 + 1}"


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """One Mosquitto for the session (tests use their own site/tenant ids as topics)."""
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    with broker:
        yield broker


@pytest.fixture(scope="session")
def victoria(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaMetrics]:
    """One VictoriaMetrics for the session (tests query by their own tenant/site labels)."""
    db = VictoriaMetrics(tmp_path_factory.mktemp("victoria"))
    with db:
        yield db
