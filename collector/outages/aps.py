"""Access points behind a controller: learned from its ``ap`` points, expected until forgotten.

Only the controller is polled, but each AP it manages is an outage entity of its own
(``<tenant>/<site>/ap/<name>``, see :mod:`collector.outages.entities`). The WLAN
controller profiles write, per poll, one ``ap`` point per AP with tags ``ap`` and
``ap_mac`` and the field ``up`` = 1 for every AP the controller reports up (the vendor's
status normalised in the profile, agent/profiles/*.yaml), beside the AP's ``status`` and
``clients`` points. From those this registry knows:

- **which APs are expected**: an AP is learned the first time its controller reports it
  up (ghost rows a controller lists but nobody saw up are not expected), and stays
  expected until it has not been listed at all for the configured time (LibreNMS marks
  such APs deleted, Zabbix LLD keeps "lost resources" N days) or support forgets it
  with ``schoolnet outages forget-ap``;
- **which were up in each poll of the controller**. The poller sends the controller's
  ``device`` point first, then its table rows, then its ``snmp_error`` points, possibly
  over several messages; so a poll's window closes when the *next* ``device`` point of
  the controller arrives. Only a window that began with the controller reachable and
  saw no ``snmp_error`` says anything about its APs (the AP table may be what failed):
  then every learned AP of that controller is *up*, *listed but not up* (with the
  vendor's status text), or *missing* from the table.

Pure and small, like the engine: time is passed in, persistence is
:meth:`ApRegistry.take_changes` / :meth:`ApRegistry.restore`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from schoolnet.wire import Point

#: The normalised field of the controller profiles (1: the controller reports it up).
UP_FIELD: Final = "up"
#: ``last_seen`` / ``last_up`` are written at most this often: they only have to be good
#: enough for forgetting after days, and a write per AP per poll would cost more.
SAVE_EVERY_S: Final = 600.0

ControllerKey = tuple[str, str, str]  # (tenant, site, controller device)

UP: Final = "up"
NOT_UP: Final = "not_up"
MISSING: Final = "missing"


@dataclass
class LearnedAp:
    """One AP a controller has reported up at least once."""

    tenant: str
    site: str
    name: str
    controller: str
    mac: str = ""
    #: Clients in the latest poll that reported it up (the mail's "last known clients").
    clients: int | None = None
    #: Vendor status text of the latest poll that listed it (not normalised).
    status: str = ""
    first_seen: float = 0.0
    #: Latest time it was reported up / listed at all (engine clock).
    last_up: float = 0.0
    last_seen: float = 0.0
    #: When this record was last handed to the store (not persisted itself).
    saved: float = field(default=0.0, compare=False)

    @property
    def key(self) -> str:
        """The entity key ``<tenant>/<site>/ap/<name>``."""
        return f"{self.tenant}/{self.site}/ap/{self.name}"

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (without the save bookkeeping)."""
        doc = asdict(self)
        doc.pop("saved", None)
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> LearnedAp:
        """The AP a :meth:`to_json` dict describes (unknown keys ignored)."""
        known = {k: v for k, v in doc.items() if k in cls.__dataclass_fields__ and k != "saved"}
        return cls(**known)


@dataclass
class PollWindow:
    """What one poll of a controller said about its APs, until the next poll starts."""

    #: The poll's ``device`` point said reachable (None: no poll started yet).
    reachable: bool | None = None
    errors: bool = False
    up: set[str] = field(default_factory=set)
    status: dict[str, str] = field(default_factory=dict)
    clients: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict:
    """One learned AP after one complete poll of its controller."""

    key: str
    state: str  # UP | NOT_UP | MISSING
    ap: LearnedAp


@dataclass
class ControllerSummary:
    """Expected vs joined for one controller (``/api/status``, ``schoolnet outages aps``)."""

    expected: int = 0
    joined: int = 0
    checked_at: float | None = None
    not_joined: list[str] = field(default_factory=list)


class ApRegistry:
    """Learned APs per controller and the open poll window of each controller."""

    def __init__(self) -> None:
        self.aps: dict[str, LearnedAp] = {}
        self.by_controller: dict[ControllerKey, set[str]] = {}
        self.by_site: dict[tuple[str, str], set[str]] = {}
        self.windows: dict[ControllerKey, PollWindow] = {}
        self.summaries: dict[ControllerKey, ControllerSummary] = {}
        self._dirty: dict[str, LearnedAp | None] = {}

    def __len__(self) -> int:
        return len(self.aps)

    # -- inputs ---------------------------------------------------------------------

    def on_ap_point(self, tenant: str, site: str, p: Point, now: float) -> LearnedAp | None:
        """Note an ``ap`` point with an ``ap`` tag.

        Returns the AP when its entity must be placed in the tree: just learned, or
        reported up by another controller than before (failover: it follows).
        """
        name = p.tags.get("ap", "")
        ctl: ControllerKey = (tenant, site, p.tags.get("device", ""))
        f = p.fields
        up = f.get(UP_FIELD)
        is_up = isinstance(up, int | float) and not isinstance(up, bool) and up >= 1
        win = self.windows.get(ctl)
        if win is None:
            if not is_up:
                return None  # a controller none of whose APs was ever seen up
            # First AP of this controller: this poll's device point came before we
            # knew it was a controller, so the window starts here.
            win = self.windows[ctl] = PollWindow(reachable=True)
        if "status" in f:
            win.status[name] = str(f["status"])[:60]
        clients = f.get("clients")
        if isinstance(clients, int) and not isinstance(clients, bool):
            win.clients[name] = clients
        key = f"{tenant}/{site}/ap/{name}"
        ap = self.aps.get(key)
        if ap is not None:
            ap.last_seen = now
            if now - ap.saved >= SAVE_EVERY_S:
                self._dirty[key] = ap
        if not is_up:
            return None
        win.up.add(name)
        if ap is None:
            ap = LearnedAp(tenant, site, name, ctl[2], mac=p.tags.get("ap_mac", ""),
                           first_seen=now, last_up=now, last_seen=now)
            self._add(ap)
            return ap
        ap.last_up = now
        mac = p.tags.get("ap_mac", ap.mac)
        if mac != ap.mac:
            ap.mac = mac
            self._dirty[key] = ap
        if ap.controller != ctl[2]:  # controller failover: the AP follows its controller
            self._move(ap, ctl[2])
            return ap
        return None

    def on_error(self, tenant: str, site: str, device: str) -> None:
        """An ``snmp_error`` of a device: if it is a controller, its poll says nothing."""
        win = self.windows.get((tenant, site, device))
        if win is not None:
            win.errors = True

    def on_device_point(self, tenant: str, site: str, device: str, reachable: bool,
                        now: float) -> list[Verdict] | None:
        """A controller's next poll begins: judge its APs by the poll that just ended.

        None when ``device`` is not a controller (the cheap common case) or the ended
        poll says nothing (unreachable, an ``snmp_error``, no poll before).
        """
        ctl = (tenant, site, device)
        win = self.windows.get(ctl)
        if win is None:
            return None
        self.windows[ctl] = PollWindow(reachable=reachable)
        if not win.reachable or win.errors:
            return None
        out: list[Verdict] = []
        summary = self.summaries.setdefault(ctl, ControllerSummary())
        summary.not_joined = []
        for key in sorted(self.by_controller.get(ctl, ())):
            ap = self.aps[key]
            if ap.name in win.status:
                ap.status = win.status[ap.name]
            if ap.name in win.up:
                state = UP
                ap.clients = win.clients.get(ap.name, ap.clients)
            else:
                state = NOT_UP if ap.name in win.status else MISSING
                summary.not_joined.append(ap.name)
            out.append(Verdict(key, state, ap))
        summary.expected = len(out)
        summary.joined = len(out) - len(summary.not_joined)
        summary.checked_at = now
        return out

    # -- learning and forgetting ----------------------------------------------------

    def _add(self, ap: LearnedAp) -> None:
        self.aps[ap.key] = ap
        self.by_controller.setdefault((ap.tenant, ap.site, ap.controller), set()).add(ap.key)
        self.by_site.setdefault((ap.tenant, ap.site), set()).add(ap.key)
        self.windows.setdefault((ap.tenant, ap.site, ap.controller), PollWindow())
        self._dirty[ap.key] = ap

    def _move(self, ap: LearnedAp, controller: str) -> None:
        self.by_controller.get((ap.tenant, ap.site, ap.controller), set()).discard(ap.key)
        ap.controller = controller
        self.by_controller.setdefault((ap.tenant, ap.site, controller), set()).add(ap.key)
        self._dirty[ap.key] = ap

    def forget(self, key: str) -> LearnedAp | None:
        """Stop expecting an AP (it is learned again when its controller reports it up)."""
        ap = self.aps.pop(key, None)
        if ap is None:
            return None
        self.by_controller.get((ap.tenant, ap.site, ap.controller), set()).discard(key)
        self.by_site.get((ap.tenant, ap.site), set()).discard(key)
        self._dirty[key] = None
        return ap

    def stale(self, now: float, max_age_s: float) -> list[str]:
        """APs no controller has listed for ``max_age_s`` (decommissioned, moved away)."""
        return sorted(k for k, ap in self.aps.items() if now - ap.last_seen > max_age_s)

    def site_aps(self, tenant: str, site: str) -> Iterable[str]:
        """Keys of the learned APs of a site."""
        return self.by_site.get((tenant, site), ())

    # -- persistence ----------------------------------------------------------------

    def take_changes(self, now: float) -> dict[str, dict[str, Any] | None]:
        """Learned, changed (throttled) and forgotten APs since the last call."""
        out: dict[str, dict[str, Any] | None] = {}
        for key, ap in self._dirty.items():
            if ap is None:
                out[key] = None
            else:
                ap.saved = now
                out[key] = ap.to_json()
        self._dirty.clear()
        return out

    def restore(self, docs: Iterable[dict[str, Any]], now: float) -> list[LearnedAp]:
        """Load what the store kept; returns the APs (their entities are the engine's job)."""
        out = []
        for doc in docs:
            try:
                ap = LearnedAp.from_json(doc)
            except TypeError:
                continue  # a record from a future version: it is learned again
            ap.saved = now
            self._add(ap)
            self._dirty.pop(ap.key, None)
            out.append(ap)
        return out
