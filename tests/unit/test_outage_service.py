"""The service with its SQLite state and mail queue, on an injected clock and a fake relay.

Restarts are simulated by building a second service on the same state directory, which
is what a collector restart (or SIGKILL) leaves behind: only what was committed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import smtplib
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from collector.outages.mailer import MailSender, PermanentMailError, SmtpRelay
from collector.outages.service import OutageService
from collector.outages.settings import AlertingSettings
from collector.outages.store import FILE_NAME, NewMail, OutageStore, QueuedMail
from schoolnet.inventory import load_inventory
from tests.outage_support import device_point, school_devices, write_site, write_tenant

BERLIN = ZoneInfo("Europe/Berlin")


class Clock:
    """A settable wall clock."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class FakeRelay(SmtpRelay):
    """Records what it is given; fails the next ``fail`` calls temporarily."""

    def __init__(self) -> None:
        super().__init__(AlertingSettings().smtp)
        self.sent: list[QueuedMail] = []
        self.fail = 0
        self.refuse_kind = ""

    def send(self, mail: QueuedMail) -> None:
        if self.fail:
            self.fail -= 1
            raise smtplib.SMTPServerDisconnected("relay down")
        if mail.kind == self.refuse_kind:
            raise PermanentMailError("550 no such user")
        self.sent.append(mail)


def subjects(mails: list[QueuedMail]) -> list[str]:
    return [str(email.message_from_bytes(m.message, policy=email.policy.default)["Subject"])
            for m in mails]


def make(tmp: Path, clock: Clock, **alerting: Any) -> OutageService:
    inv_dir = tmp / "inv"
    if not inv_dir.exists():
        write_tenant(inv_dir, "t", thresholds={"hold_down_s": 60, "min_open_s": 60},
                     alerting={"recipients": ["it@t.example"], **alerting})
        write_site(inv_dir, "t", "gy", school_devices())
    inv = load_inventory(inv_dir)
    return OutageService(AlertingSettings(), inv, tmp / "state", clock=clock, relay=FakeRelay())


def queued(svc: OutageService) -> list[QueuedMail]:
    out = []
    db = svc.store.db
    for row in db.execute("SELECT id, outage_id, kind, sender, recipients, message FROM mailq "
                          "ORDER BY id"):
        out.append(QueuedMail(id=row[0], outage_id=row[1], kind=row[2], sender=row[3],
                              recipients=(), message=bytes(row[5])))
    return out


def run_for(svc: OutageService, clock: Clock, seconds: float, step: float = 5) -> None:
    end = clock.t + seconds
    while clock.t < end:
        clock.t += step
        svc.on_points("t", "gy", [])  # the agent keeps sending
        svc.tick()


def test_restart_while_open_gives_one_resolved_and_no_second_down(tmp_path: Path) -> None:
    clock = Clock(dt.datetime(2025, 11, 24, 9, tzinfo=BERLIN).timestamp())
    svc = make(tmp_path, clock)
    svc.on_status("t", "gy", "offline", "lost")
    run_for(svc, clock, 70)
    assert [m.kind for m in queued(svc)] == ["down"]
    svc.store.close()  # "SIGKILL": nothing but the committed state is left
    again = make(tmp_path, clock)
    run_for(again, clock, 120)
    again.on_status("t", "gy", "online")
    run_for(again, clock, 10)
    mails = queued(again)
    assert [m.kind for m in mails] == ["down", "resolved"]
    assert mails[0].outage_id == mails[1].outage_id
    assert "RESOLVED after" in subjects(mails)[1]


def test_outage_ids_are_never_reused(tmp_path: Path) -> None:
    clock = Clock(dt.datetime(2025, 11, 24, 9, tzinfo=BERLIN).timestamp())
    svc = make(tmp_path, clock)
    svc.on_points("t", "gy", [device_point("sw1", False, clock.t)] * 2)
    run_for(svc, clock, 70)
    first = svc.engine.open.copy()
    svc.store.close()
    again = make(tmp_path, clock)
    again.on_points("t", "gy", [device_point("sw2", False, clock.t)] * 2)
    run_for(again, clock, 70)
    assert set(again.engine.open) - set(first) and min(set(again.engine.open) - set(first)) > \
        max(first)


def test_digest_policy_with_injected_clock(tmp_path: Path) -> None:
    """Acceptance 7: outside lesson hours, policy digest: no mail, one digest at 07:00."""
    clock = Clock(dt.datetime(2025, 11, 24, 22, tzinfo=BERLIN).timestamp())  # Monday night
    svc = make(tmp_path, clock, digest_at="07:00",
               policy={"outside_lesson_hours": "digest"})
    svc.on_points("t", "gy", [device_point("sw1", False, clock.t)] * 2)
    run_for(svc, clock, 120)
    assert svc.engine.open and queued(svc) == []
    svc.on_points("t", "gy", [device_point("sw1", True, clock.t)])
    run_for(svc, clock, 120)
    assert not svc.engine.open and queued(svc) == []
    svc.store.close()
    svc = make(tmp_path, clock, digest_at="07:00")  # a restart in the night changes nothing
    clock.t = dt.datetime(2025, 11, 25, 6, 59, tzinfo=BERLIN).timestamp()
    run_for(svc, clock, 55)
    assert queued(svc) == []
    run_for(svc, clock, 10)
    mails = queued(svc)
    assert [m.kind for m in mails] == ["digest"]
    assert "Übersicht" in subjects(mails)[0]
    run_for(svc, clock, 3600, step=60)
    assert len(queued(svc)) == 1


def test_store_commit_is_atomic_and_queue_is_ordered(tmp_path: Path) -> None:
    store = OutageStore(tmp_path / "s.sqlite")
    mails = [NewMail(i, "down", "a@b.example", ("c@d.example",), f"m{i}".encode())
             for i in range(3)]
    store.commit({}, [], None, mails, 1.0)
    first = store.next_mail()
    assert first is not None and first.message == b"m0"
    store.mark_attempt(first.id, "down")
    again = store.next_mail()
    assert again is not None and again.id == first.id
    store.mark_sent(first.id, 2.0)
    store.mark_failed(first.id + 1, "550", 3.0)
    last = store.next_mail()
    assert last is not None and last.message == b"m2"
    assert store.queue_stats()["failed"] == 1


def test_sender_keeps_order_through_a_relay_outage(tmp_path: Path) -> None:
    store = OutageStore(tmp_path / "s.sqlite")
    relay = FakeRelay()
    relay.fail = 3
    relay.refuse_kind = "reminder"
    store.commit({}, [], None, [
        NewMail(i, "reminder" if i == 1 else "down", "a@b.example", ("c@d.example",),
                f"m{i}".encode()) for i in range(4)], 1.0)
    sender = MailSender(store, relay, retry_min_s=0.001, retry_max_s=0.01)

    async def go() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(sender.run(stop))
        for _ in range(500):
            if len(relay.sent) == 3:
                break
            await asyncio.sleep(0.01)
        stop.set()
        sender.wake()
        await asyncio.wait_for(task, 5)

    asyncio.run(go())
    assert [m.message for m in relay.sent] == [b"m0", b"m2", b"m3"]
    assert sender.errors == 3 and sender.failed == 1


def maintenance_lines(svc: OutageService) -> list[str]:
    """The ``maintenance`` lines the service queued, taken (like its run loop does)."""
    got = [line for line in svc._lines if line.startswith("maintenance,")]
    svc._lines = [line for line in svc._lines if not line.startswith("maintenance,")]
    return got


def test_maintenance_points_mark_a_windows_start_and_end(tmp_path: Path) -> None:
    day = dt.datetime(2025, 11, 24, 8, 50, tzinfo=BERLIN)
    clock = Clock(day.timestamp())
    svc = make(tmp_path, clock, maintenance=[
        {"sites": ["gy"], "start": "2025-11-24 09:00", "end": "2025-11-24 10:00",
         "reason": "Switch-Tausch"}])
    svc.tick()
    # After a start every site gets its state once: a window may have ended meanwhile.
    assert maintenance_lines(svc) == [
        f"maintenance,site=gy,tenant=t active=0i {int(clock.t * 1e9)}"]
    run_for(svc, clock, 5 * 60)  # 08:55: nothing changed, nothing written
    assert maintenance_lines(svc) == []
    run_for(svc, clock, 6 * 60)  # into the window
    (start,) = maintenance_lines(svc)
    assert start.startswith('maintenance,site=gy,tenant=t active=1i,reason="Switch-Tausch" ')
    assert int(start.rsplit(" ", 1)[1]) // 10**9 - int(day.timestamp()) in range(600, 606)
    run_for(svc, clock, 60 * 60)  # past 10:00
    (end,) = maintenance_lines(svc)
    assert end.startswith("maintenance,site=gy,tenant=t active=0i ")


def test_maintenance_points_follow_windows_added_and_removed_with_the_cli(
        tmp_path: Path) -> None:
    clock = Clock(dt.datetime(2025, 11, 24, 9, tzinfo=BERLIN).timestamp())
    svc = make(tmp_path, clock)
    svc.tick()
    assert [line.split(" ")[1] for line in maintenance_lines(svc)] == ["active=0i"]
    cli = OutageStore(tmp_path / "state" / FILE_NAME)  # another process's view
    wid = cli.add_window("t", (), clock.t, clock.t + 3600, "Umbau", clock.t)
    run_for(svc, clock, 5)
    assert [line.split(" ")[1] for line in maintenance_lines(svc)] == [
        'active=1i,reason="Umbau"']
    assert cli.remove_window(wid)
    run_for(svc, clock, 5)
    assert [line.split(" ")[1] for line in maintenance_lines(svc)] == ["active=0i"]
    cli.close()
    # A restarted collector writes the state it finds once more.
    svc.store.close()
    again = make(tmp_path, clock)
    again.tick()
    assert [line.split(" ")[1] for line in maintenance_lines(again)] == ["active=0i"]
