"""Who gets which mail, and when: policies, maintenance, digests and reminders.

Pure like the engine (time is an argument, state is JSON): the :class:`Dispatcher`
turns :class:`OutageEvent` s and the passing of time into :class:`MailOrder` s. The
rules:

- A notifiable outage is *urgent* now if the tenant's policy for the situation says
  ``immediately``. The situation is ``maintenance`` (a window covers the site),
  ``lesson_hours`` (school day, lesson time) or ``outside_lesson_hours``. Urgent: the
  DOWN mail goes out. Otherwise it is *held*: ``digest`` keeps it for the next digest,
  ``never`` keeps it recorded only. A held outage is looked at again as time passes: one
  still open when the situation turns urgent (lessons start, maintenance ends) is mailed
  then, late but once.
- A RESOLVED mail goes out only for an outage whose DOWN mail went out: every recovery
  mail has its outage mail. An outage held for the digest that resolves is listed in the
  digest as "opened and resolved".
- The digest (one mail per tenant) goes out at ``digest_at`` on ``digest_days`` when it
  has anything to say.
- Reminders: every ``reminder_every_h`` for an open, mailed outage, while urgent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from collector.outages.model import OPEN, RESOLVE, UPDATE, Outage, OutageEvent
from schoolnet.alerting import MaintenanceWindow
from schoolnet.calendars import SchoolCalendar
from schoolnet.inventory import Tenant

DOWN = "down"
RESOLVED = "resolved"
REMINDER = "reminder"
STILL_DOWN = "still_down"
DIGEST = "digest"

MAINTENANCE = "maintenance"
LESSON = "lesson_hours"
OUTSIDE = "outside_lesson_hours"


@dataclass
class Notice:
    """The mail state of one notifiable outage."""

    outage: dict[str, Any]  # the outage as last seen (JSON), for late and digest mails
    sent: float | None = None  # when its DOWN mail was ordered
    held: str = ""  # "digest" | "never" while not sent
    reminders: int = 0
    last_mail: float | None = None
    in_digest: bool = False  # listed in a digest already


@dataclass
class DigestItem:
    """One line of a tenant's next digest."""

    outage: dict[str, Any]
    situation: str
    resolved: bool = False


@dataclass(frozen=True)
class MailOrder:
    """A mail to compose and queue: what kind, for which outage(s), why."""

    kind: str  # DOWN | RESOLVED | REMINDER | STILL_DOWN | DIGEST
    tenant: str
    outage: Outage | None = None
    situation: str = ""
    late: bool = False  # a DOWN held until now (digest/never, maintenance, night)
    reminder: int = 0
    items: tuple[DigestItem, ...] = ()
    at: float = 0.0


MaintenanceLookup = Callable[[str, str, float], MaintenanceWindow | None]


class Dispatcher:
    """Mail decisions for every tenant; see the module docstring."""

    def __init__(self, tenants: Mapping[str, Tenant], calendars: Mapping[str, SchoolCalendar],
                 maintenance: MaintenanceLookup) -> None:
        self.tenants = tenants
        self.calendars = calendars
        self.maintenance = maintenance
        self.notices: dict[int, Notice] = {}
        self.digest: dict[str, list[DigestItem]] = {}
        self.next_digest: dict[str, float] = {}
        self.dirty = False

    def situation(self, tenant: str, site: str, now: float) -> str:
        """``maintenance``, ``lesson_hours`` or ``outside_lesson_hours`` for a site now."""
        if self.maintenance(tenant, site, now) is not None:
            return MAINTENANCE
        cal = self.calendars.get(tenant)
        return LESSON if cal is not None and cal.is_lesson_time(now) else OUTSIDE

    def policy(self, tenant: str, situation: str) -> str:
        """The tenant's policy (immediately | digest | never) for a situation."""
        t = self.tenants.get(tenant)
        if t is None:
            return "never"
        a = t.alerting
        return {MAINTENANCE: a.policy_maintenance, LESSON: a.policy_lesson,
                OUTSIDE: a.policy_outside}[situation]

    def on_event(self, ev: OutageEvent, now: float) -> list[MailOrder]:
        """React to one engine event."""
        o = ev.outage
        orders: list[MailOrder] = []
        if ev.kind == OPEN:
            n = self.notices[o.id] = Notice(outage=o.to_json())
            self.dirty = True
            self._decide(o, n, now, orders, late=False)
        elif ev.kind == UPDATE and ev.note == STILL_DOWN:
            n2 = self.notices.get(o.id)
            if n2 is not None and n2.sent is not None:
                n2.outage = o.to_json()
                orders.append(MailOrder(STILL_DOWN, o.tenant, o, at=now))
                n2.last_mail = now
                self.dirty = True
        elif ev.kind == RESOLVE and o.notified:
            n3 = self.notices.pop(o.id, None)
            self.dirty = True
            if n3 is None:
                return orders
            if n3.sent is not None:
                orders.append(MailOrder(RESOLVED, o.tenant, o, at=now))
            elif n3.held == "digest":
                self._add_digest(o, n3, now, resolved=True)
        return orders

    def _decide(self, o: Outage, n: Notice, now: float, orders: list[MailOrder],
                late: bool) -> None:
        sit = self.situation(o.tenant, o.site, now)
        pol = self.policy(o.tenant, sit)
        if pol == "immediately":
            n.sent = n.last_mail = now
            n.held = ""
            orders.append(MailOrder(DOWN, o.tenant, o, situation=sit, late=late, at=now))
            self.dirty = True
            return
        if n.held != pol:
            n.held = pol
            self.dirty = True
        if pol == "digest" and not n.in_digest:
            self._add_digest(o, n, now, resolved=False, situation=sit)

    def _add_digest(self, o: Outage, n: Notice, now: float, *, resolved: bool,
                    situation: str = "") -> None:
        items = self.digest.setdefault(o.tenant, [])
        for item in items:
            if item.outage["id"] == o.id:
                item.outage, item.resolved = o.to_json(), resolved
                break
        else:
            items.append(DigestItem(o.to_json(), situation or OUTSIDE, resolved))
        n.in_digest = True
        if o.tenant not in self.next_digest:
            self.next_digest[o.tenant] = self._digest_after(o.tenant, now)
        self.dirty = True

    def _digest_after(self, tenant: str, now: float) -> float:
        t = self.tenants[tenant]
        cal = self.calendars[tenant]
        return cal.next_time(now, t.alerting.digest_at, t.alerting.digest_days)

    def tick(self, now: float, open_outages: Mapping[int, Outage]) -> list[MailOrder]:
        """Time passes: held outages may turn urgent, reminders and digests fall due."""
        orders: list[MailOrder] = []
        for oid, n in list(self.notices.items()):
            o = open_outages.get(oid)
            if o is None:
                continue
            if n.sent is None:
                self._decide(o, n, now, orders, late=True)
                continue
            t = self.tenants.get(o.tenant)
            every = t.alerting.reminder_every_h * 3600 if t else 0
            if every and n.last_mail is not None and now - n.last_mail >= every \
                    and self.policy(o.tenant, self.situation(o.tenant, o.site, now)) \
                    == "immediately":
                n.reminders += 1
                n.last_mail = now
                self.dirty = True
                orders.append(MailOrder(REMINDER, o.tenant, o, reminder=n.reminders, at=now))
        for tenant, due in list(self.next_digest.items()):
            if now < due:
                continue
            items = self.digest.pop(tenant, [])
            del self.next_digest[tenant]
            self.dirty = True
            if items:
                orders.append(MailOrder(DIGEST, tenant, items=tuple(items), at=now))
        return orders

    def to_json(self) -> dict[str, Any]:
        """The whole state, JSON-able (stored with every step)."""
        return {
            "notices": {str(k): asdict(v) for k, v in self.notices.items()},
            "digest": {t: [asdict(i) for i in items] for t, items in self.digest.items()},
            "next_digest": dict(self.next_digest),
        }

    def restore(self, doc: dict[str, Any]) -> None:
        """Load what :meth:`to_json` saved."""
        self.notices = {int(k): Notice(**v) for k, v in doc.get("notices", {}).items()}
        self.digest = {t: [DigestItem(**i) for i in items]
                       for t, items in doc.get("digest", {}).items()}
        self.next_digest = {t: float(v) for t, v in doc.get("next_digest", {}).items()}


__all__ = ["DIGEST", "DOWN", "REMINDER", "RESOLVED", "STILL_DOWN", "Dispatcher", "MailOrder",
           "Notice"]
