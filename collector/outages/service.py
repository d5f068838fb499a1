"""The outage engine inside the collector: feed it, persist it, mail, write, serve.

The collector's second consumer of validated messages (ARCHITECTURE: subscriber ->
validate -> fan-out to the writer and this). :class:`OutageService` owns the pure
parts (:class:`~collector.outages.engine.OutageEngine`,
:class:`~collector.outages.dispatch.Dispatcher`) and their I/O edges: every step is
persisted with the mails it causes in one SQLite transaction, the mail queue is drained
by :class:`~collector.outages.mailer.MailSender`, and every outage event becomes a point
of the ``outage`` measurement for the database (Grafana annotations and tables).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from collector.lineproto import encode_line
from collector.metrics import Registry
from collector.outages.dispatch import Dispatcher, MailOrder
from collector.outages.engine import OutageEngine
from collector.outages.mailer import MailSender, SmtpRelay
from collector.outages.mailfmt import MailFormatter, finding, what
from collector.outages.model import AFFECTED, OPEN, RESOLVE, Outage, OutageEvent
from collector.outages.settings import AlertingSettings
from collector.outages.store import FILE_NAME, NewMail, OutageStore
from schoolnet.alerting import MaintenanceWindow
from schoolnet.inventory import Inventory
from schoolnet.wire import Point

log = logging.getLogger("schoolnet.collector.outages")

LineSink = Callable[[list[str]], Awaitable[None]]


def outage_line(ev: OutageEvent, affected: int) -> str:
    """The ``outage`` point of one event (tags: tenant, site, kind, entity)."""
    o = ev.outage
    fields: dict[str, int | float | bool | str] = {
        "id": o.id,
        "event": ev.kind if not ev.note else f"{ev.kind}:{ev.note}",
        "open": 0 if ev.kind == RESOLVE else 1,
        "notified": 1 if o.notified else 0,
        "root": o.root or 0,
        "affected": affected,
        "duration_s": float(round((o.closed or ev.at) - o.started, 3)),
    }
    tags = {"tenant": o.tenant, "site": o.site, "kind": o.kind, "entity": o.name}
    return encode_line("outage", tags, fields, int(ev.at * 1e9))


class OutageService:
    """See the module docstring. Call :meth:`on_points` / :meth:`on_status` per message
    and run :meth:`run` as a task."""

    def __init__(self, settings: AlertingSettings, inventory: Inventory,
                 state_dir: str | Path, *, clock: Callable[[], float] = time.time,
                 connected: Callable[[], bool] = lambda: True,
                 registry: Registry | None = None, relay: SmtpRelay | None = None) -> None:
        self.settings = settings
        self.inventory = inventory
        self.clock = clock
        self.connected = connected
        self.store = OutageStore(Path(state_dir) / FILE_NAME)
        now = clock()
        self._last_id = self.store.max_outage_id()
        self.calendars = {tid: t.alerting.calendar() for tid, t in inventory.tenants.items()}
        self.engine = OutageEngine(inventory, now=now, next_id=self._new_id,
                                   lesson_time=self._lesson_time,
                                   ap_forget_s=settings.ap_forget_days * 86400)
        self._forget_version = -1
        #: The window (its id) each site was last written as in (``""``: none).
        self._maintenance: dict[tuple[str, str], str] = {}
        self._windows: list[tuple[str, MaintenanceWindow]] = []
        self._windows_version = -1
        self.dispatcher = Dispatcher(inventory.tenants, self.calendars, self.maintenance)
        self.dispatcher.restore(self.store.load_dispatch())
        self.formatter = MailFormatter(
            sender=settings.smtp.sender, token=self.store.token, domain=settings.domain,
            tenant_names={t.id: t.name for t in inventory.tenants.values()},
            site_names={k: s.name for k, s in inventory.sites.items()},
            languages={t.id: t.alerting.language for t in inventory.tenants.values()},
            zones={t.id: t.alerting.timezone for t in inventory.tenants.values()})
        self.sender = MailSender(self.store, relay or SmtpRelay(settings.smtp),
                                 retry_min_s=settings.retry_min_s,
                                 retry_max_s=settings.retry_max_s, clock=clock)
        self._lines: list[str] = []
        self._no_recipients: set[str] = set()
        self.opened = 0
        self.mails_queued = 0
        if registry is not None:
            self._register(registry)
        self._handle(self.engine.restore(self.store.load_states(),
                                         self.store.load_open_outages(), now,
                                         aps=self.store.learned_aps()), now)

    def _register(self, r: Registry) -> None:
        p = "schoolnet_collector_"
        r.gauge(p + "outages_open", "Open outages (mailed ones and affected ones).",
                read=lambda: [((), float(len(self.engine.open)))])
        r.gauge(p + "mail_queue_pending", "Alert mails waiting for the SMTP relay.",
                read=lambda: [((), float(self.store.queue_stats()["pending"]))])
        r.gauge(p + "mails_sent", "Alert mails the relay accepted since the start.",
                read=lambda: [((), float(self.sender.sent))])
        r.gauge(p + "mail_relay_failing", "1 while the SMTP relay refuses or is unreachable.",
                read=lambda: [((), 0.0 if self.sender.failing_since is None else 1.0)])

    def _new_id(self) -> int:
        self._last_id += 1
        return self._last_id

    def _lesson_time(self, tenant: str, ts: float) -> bool:
        cal = self.calendars.get(tenant)
        return cal is not None and cal.is_lesson_time(ts)

    def maintenance(self, tenant: str, site: str, ts: float) -> MaintenanceWindow | None:
        """The maintenance window (config or CLI) covering ``site`` at ``ts``, if any."""
        self._refresh_windows()
        return self._covering(tenant, site, ts)

    def _refresh_windows(self) -> None:
        version = self.store.windows_version()
        if version != self._windows_version:  # the CLI added or removed a window
            self._windows = self.store.windows()
            self._windows_version = version

    def _covering(self, tenant: str, site: str, ts: float) -> MaintenanceWindow | None:
        t = self.inventory.tenants.get(tenant)
        for w in t.alerting.maintenance if t else ():
            if w.covers(site, ts):
                return w
        for wt, w in self._windows:
            if wt == tenant and w.covers(site, ts):
                return w
        return None

    def _maintenance_lines(self, now: float) -> None:
        """A ``maintenance`` point for every site whose window state changed.

        After a start every site gets one (active or not): the dashboards read the
        latest point per site, and a window may have ended while the collector was down.
        """
        self._refresh_windows()
        for tenant, site in self.inventory.sites:
            w = self._covering(tenant, site, now)
            state = (w.id or f"{w.start}-{w.end}") if w is not None else ""
            if self._maintenance.get((tenant, site)) == state:
                continue
            self._maintenance[(tenant, site)] = state
            fields: dict[str, int | float | bool | str] = {"active": 1 if w else 0}
            if w is not None and w.reason:
                fields["reason"] = w.reason
            self._lines.append(encode_line("maintenance", {"tenant": tenant, "site": site},
                                           fields, int(now * 1e9)))

    # -- inputs -----------------------------------------------------------------------

    def wanted(self, tenant: str, site: str) -> Callable[[str, str | None], bool]:
        """``wanted(measurement, device)``: may points of a group of ``tenant/site``
        change anything here? Points of unwanted groups need not even be built."""
        engine = self.engine

        def wanted(measurement: str, device: str | None) -> bool:
            return engine.wants(tenant, site, measurement, device)

        return wanted

    def on_points(self, tenant: str, site: str, points: Iterable[Point]) -> None:
        """An accepted batch of a site (not a duplicate)."""
        now = self.clock()
        self._handle(self.engine.on_points(tenant, site, points, now), now)

    def on_status(self, tenant: str, site: str, state: str, reason: str = "") -> None:
        """A site's status message."""
        now = self.clock()
        self._handle(self.engine.on_status(tenant, site, state, reason, now), now)

    def tick(self) -> None:
        """Let the timers run (hold-downs, flapping, releases, reminders, digests)."""
        now = self.clock()
        self.engine.set_connected(self.connected(), now)
        events = self.engine.tick(now)
        self._maintenance_lines(now)
        version = self.store.windows_version()
        if version != self._forget_version:  # the CLI wrote: maybe a forget-ap request
            self._forget_version = version
            events += self._forget_requested(now)
        orders = [o for ev in events for o in self._event(ev, now)]
        orders += self.dispatcher.tick(now, self.engine.open)
        self._persist(orders, now)

    # -- events to mails, lines and the database --------------------------------------

    def _forget_requested(self, now: float) -> list[OutageEvent]:
        """Apply ``schoolnet outages forget-ap`` requests (their rows go with the commit)."""
        events: list[OutageEvent] = []
        unknown = []
        for key in self.store.forget_requests():
            if key in self.engine.aps.aps:
                log.info("forgetting access point %s (requested with the CLI)", key)
                events += self.engine.forget_ap(key, now)
            else:
                unknown.append(key)
        if unknown:
            self.store.drop_forget_requests(unknown)
        return events

    def _event(self, ev: OutageEvent, now: float) -> list[MailOrder]:
        o = ev.outage
        if ev.kind == OPEN:
            self.opened += 1
            level = logging.WARNING
        else:
            level = logging.INFO
        log.log(level, "outage #%d %s%s: %s (%s)", o.id, ev.kind,
                f" ({ev.note})" if ev.note else "", o.key, finding(o.detail, "en"))
        if ev.kind in (OPEN, AFFECTED):
            affected = self.engine.affected(o)[0]
        else:
            affected = len(o.affected_ids)
        self._lines.append(outage_line(ev, affected))
        return self.dispatcher.on_event(ev, now)

    def _handle(self, events: list[OutageEvent], now: float) -> None:
        orders = [o for ev in events for o in self._event(ev, now)]
        self._persist(orders, now)

    def _persist(self, orders: list[MailOrder], now: float) -> None:
        states, outages = self.engine.take_changes()
        aps = self.engine.aps.take_changes(now)
        dispatch = self.dispatcher.to_json() if self.dispatcher.dirty else None
        self.dispatcher.dirty = False
        mails = [m for m in (self._compose(o) for o in orders) if m is not None]
        if states or outages or dispatch is not None or mails or aps:
            self.store.commit(states, outages, dispatch, mails, now, aps)
        if mails:
            self.mails_queued += len(mails)
            self.sender.wake()

    def _compose(self, order: MailOrder) -> NewMail | None:
        tenant = self.inventory.tenants.get(order.tenant)
        recipients = tenant.alerting.recipients if tenant else ()
        if not recipients:
            if order.tenant not in self._no_recipients:
                self._no_recipients.add(order.tenant)
                log.warning("tenant %s has no alerting.recipients: outages are recorded, "
                            "not mailed", order.tenant)
            return None
        affected = self.engine.affected(order.outage) if order.outage else (0, 0)
        msg = self.formatter.build(order, recipients, affected)
        return NewMail(order.outage.id if order.outage else None, order.kind,
                       self.settings.smtp.sender, recipients, msg.as_bytes())

    # -- running ----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, sink: LineSink | None = None) -> None:
        """Tick, flush ``outage`` lines to ``sink``, send mail; until ``stop``."""
        sender = asyncio.create_task(self.sender.run(stop), name="mail-sender")
        last_prune = 0.0
        try:
            while not stop.is_set():
                try:
                    self.tick()
                except Exception:  # a bug in one step must not stop alerting for good
                    log.exception("outage tick failed")
                if self._lines and sink is not None:
                    lines, self._lines = self._lines, []
                    await sink(lines)
                now = self.clock()
                if now - last_prune > 3600:
                    self.store.prune(now - self.settings.history_days * 86400)
                    last_prune = now
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.settings.tick_s)
            if self._lines and sink is not None:  # what the last tick produced
                lines, self._lines = self._lines, []
                await sink(lines)
        finally:
            await asyncio.wait_for(sender, 10)
            self.store.close()

    # -- visibility -------------------------------------------------------------------

    def describe(self, o: Outage) -> dict[str, Any]:
        """One outage as JSON for ``/api/outages`` and ``schoolnet outages``."""
        down, behind = self.engine.affected(o) if o.is_open else (0, 0)
        site = self.inventory.sites.get((o.tenant, o.site))
        return {**o.to_json(), "what": what(o, "en"), "finding": finding(o.detail, "en"),
                "site_name": site.name if site else o.site,
                "affected_now": down, "devices_behind": behind,
                "affected_total": len(o.affected_ids)}

    def controllers(self) -> list[dict[str, Any]]:
        """Per WLAN controller: APs expected (learned) vs joined in its latest full poll."""
        reg = self.engine.aps
        out = []
        for (tenant, site, dev), keys in sorted(reg.by_controller.items()):
            if not keys:
                continue
            summary = reg.summaries.get((tenant, site, dev))
            down = sorted(reg.aps[k].name for k in keys
                          if (st := self.engine.states.get(k)) is not None and st.bad)
            out.append({"tenant": tenant, "site": site, "controller": dev,
                        "expected": len(keys),
                        "joined": summary.joined if summary else None,
                        "checked_at": summary.checked_at if summary else None,
                        "not_joined": list(summary.not_joined) if summary else [],
                        "down": down})
        return out

    def api(self, recent_s: float = 86400) -> dict[str, Any]:
        """Open and recent outages, the mail queue, and APs per WLAN controller."""
        now = self.clock()
        rows = self.store.outages(since=now - recent_s)
        return {
            "open": [self.describe(self.engine.open.get(o.id, o)) for o in rows if o.is_open],
            "recent": [self.describe(o) for o in rows if not o.is_open],
            "mail": {**self.store.queue_stats(), "relay_failing": self.sender.failing_since
                     is not None, "relay_error": self.sender.last_error},
            "controllers": self.controllers(),
        }
