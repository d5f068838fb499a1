"""The outage engine: a pure state machine from observations to outage events.

No I/O and no clock of its own: every call takes ``now`` (seconds since the epoch), so
hold-downs, flapping and dependencies are tested without waiting. Fed by validated
points (:meth:`OutageEngine.on_points`), status events (:meth:`on_status`) and a timer
(:meth:`tick`); returns :class:`OutageEvent` s. What to mail is the dispatcher's job.

Rules, per entity (see docs/outages.md):

1. **Hold-down.** A condition must hold ``hold_down_s`` (for degraded/saturated uplinks:
   ``degraded_for_s`` / ``saturated_for_s``) before an outage opens.
2. **Dependencies.** An entity never opens while an ancestor is *pending* (bad, in its
   hold-down): its fate decides whether this one is a cause or a symptom. With an
   ancestor open, it opens as *affected* (recorded, attributed to the root, not mailed).
   Zabbix stops evaluating dependent triggers; Alertmanager inhibits on labels; here the
   tree comes from the inventory, and the order of hold-down expiry cannot produce a
   stray symptom mail.
3. **Release.** When a root resolves, each affected descendant is re-attributed to
   another open ancestor, or resolved silently if fine, or *released*: after a new
   hold-down, confirmed by a sample that arrived after the root recovered (data from
   before is stale), it becomes an outage of its own (mailed).
4. **Minimum open time.** A notified outage stays open at least ``min_open_s``.
5. **Flapping.** ``flap_transitions`` condition changes within ``flap_window_s`` make an
   entity flapping: an outage opens at once (one mail) or, if open, is marked; it stays
   open, quietly, until no change for ``flap_quiet_s``; then it resolves, or (still
   bad) carries on as a plain outage ("still down").

APs behind a WLAN controller are entities the engine learns from the controller's
points (:mod:`collector.outages.aps`); they join the tree below the controller and the
site's ``aps`` group, and leave it when forgotten.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final

from collector.outages import conditions as cond
from collector.outages.aps import ApRegistry, LearnedAp, Verdict
from collector.outages.entities import (
    AGENT,
    APS,
    DEVICE,
    DEVICE_KINDS,
    INTERFACE,
    UPLINK,
    UPLINK_QUALITY,
    UPLINK_SATURATION,
    UPLINK_THROUGHPUT,
    EntityTree,
    entity_key,
)
from collector.outages.model import (
    AFFECTED,
    OPEN,
    RESOLVE,
    UPDATE,
    EntityState,
    Outage,
    OutageEvent,
)
from schoolnet.alerting import Thresholds
from schoolnet.inventory import Inventory
from schoolnet.wire import Point

Events = list[OutageEvent]
#: How often (engine clock) learned APs are checked for being forgotten.
AP_SWEEP_S = 60.0


#: Measurements :meth:`OutageEngine._point` reads whatever their device.
_ALWAYS_WANTED: Final = frozenset({"device", "probe_icmp", "probe_throughput", "uplink", "ap"})


class OutageEngine:
    """Entity states and open outages of every inventory site; see the module docstring.

    ``next_id`` hands out outage ids (the store's durable counter); ``lesson_time``
    answers whether a tenant has lessons at a time (for the saturation condition);
    ``ap_forget_s``: a learned AP no controller listed for this long is forgotten.
    """

    def __init__(self, inventory: Inventory, *, now: float,
                 next_id: Callable[[], int],
                 lesson_time: Callable[[str, float], bool] = lambda tenant, ts: True,
                 ap_forget_s: float = 7 * 86400.0) -> None:
        self.tree = EntityTree(inventory)
        self.aps = ApRegistry()
        self.ap_forget_s = ap_forget_s
        self._ap_sweep = now
        self.sites = {key: site for key, site in inventory.sites.items()}
        self.states: dict[str, EntityState] = {}
        self.open: dict[int, Outage] = {}
        self._next_id = next_id
        self._lesson_time = lesson_time
        #: Last time anything came from each site; starts as a grace period at startup.
        self.seen: dict[tuple[str, str], float] = {key: now for key in self.sites}
        #: False while the collector has no broker connection: silence means nothing then.
        self.connected = True
        self._dirty_states: set[str] = set()
        self._dirty_outages: dict[int, Outage] = {}

    # -- inputs ---------------------------------------------------------------------

    def wants(self, tenant: str, site: str, measurement: str, device: str | None) -> bool:
        """Whether points of ``measurement`` (of ``device``; None: any) can change anything.

        The collector asks before it builds the points of a group: most of a message
        (the interfaces of a switch without monitored ports, LLDP, PoE, sensors) matters
        only to the database, and the outage engine sees only what :meth:`_point` reads.
        """
        if measurement in _ALWAYS_WANTED:
            return True
        if measurement == "interface":
            return device is None or (tenant, site, device) in self.tree.monitored
        if measurement == "snmp_error":
            return bool(self.aps.windows)
        return False

    def on_points(self, tenant: str, site: str, points: Iterable[Point], now: float) -> Events:
        """One accepted batch of a site: it is alive, and each point may change a condition."""
        events: Events = []
        if (tenant, site) not in self.sites:
            return events
        self.seen[(tenant, site)] = now
        self._check_agent(tenant, site, now, events)
        th = self.sites[(tenant, site)].thresholds
        oldest_ns = int((now - th.max_point_age_s) * 1e9)
        for p in points:
            # Replayed from the agent's spool after a gap: history, written to the
            # database, but too old to open or close anything now.
            if p.time_ns >= oldest_ns:
                self._point(tenant, site, p, th, now, events)
        return events

    def on_status(self, tenant: str, site: str, state: str, reason: str, now: float) -> Events:
        """The site's retained status (``online``, or ``offline`` from the last will)."""
        events: Events = []
        if (tenant, site) not in self.sites:
            return events
        key = entity_key(tenant, site, AGENT)
        st = self.states.get(key)
        if state == "offline":
            self._st(key).mem.update(status="offline", reason=reason)
            self._dirty_states.add(key)
        elif st is not None and "status" in st.mem:
            st.mem.pop("status", None)
            st.mem.pop("reason", None)
            self._dirty_states.add(key)
        self.seen[(tenant, site)] = now
        self._check_agent(tenant, site, now, events)
        return events

    def set_connected(self, connected: bool, now: float) -> None:
        """The collector's own broker connection; on reconnect every site gets a grace."""
        if connected and not self.connected:
            for key in self.seen:
                self.seen[key] = now
        self.connected = connected

    def tick(self, now: float) -> Events:
        """Time passes: silent sites, hold-downs, minimum open times, flapping, releases."""
        events: Events = []
        for tenant, site in self.sites:
            self._check_agent(tenant, site, now, events)
        if now - self._ap_sweep >= AP_SWEEP_S:
            self._ap_sweep = now
            for key in self.aps.stale(now, self.ap_forget_s):
                events += self.forget_ap(key, now, code="ap_decommissioned")
        active = [k for k, st in self.states.items()
                  if st.bad or st.outage is not None or st.flapping]
        for key in sorted(active, key=lambda k: self.tree[k].depth):
            self._settle(key, now, events)
        return events

    # -- conditions -----------------------------------------------------------------

    def _point(self, tenant: str, site: str, p: Point, th: Thresholds, now: float,
               events: Events) -> None:
        m = p.measurement
        if m == "device":
            dev = p.tags.get("device", "")
            key = entity_key(tenant, site, DEVICE, dev)
            if key in self.tree:
                mem = self._mem(key)
                obs = cond.device_observation(p, mem, th)
                if obs is not None:
                    was = self._bad(key)
                    self._observe(key, obs, now, events, mem)
                    if self._bad(key) != was:
                        self._check_aps(tenant, site, th, now, events)
            if (tenant, site, dev) in self.aps.windows:  # a WLAN controller: a new poll
                reachable = p.fields.get("reachable")
                verdicts = self.aps.on_device_point(
                    tenant, site, dev, isinstance(reachable, int | float) and reachable >= 1,
                    now)
                if verdicts:
                    self._judge_aps(tenant, site, verdicts, th, now, events)
        elif m == "interface":
            dev, ifname = p.tags.get("device", ""), p.tags.get("ifname", "")
            if ifname in self.tree.monitored.get((tenant, site, dev), ()):
                key = entity_key(tenant, site, INTERFACE, f"{dev}/{ifname}")
                mem = self._mem(key)
                obs = cond.interface_observation(p, mem, th)
                if obs is not None:
                    self._observe(key, obs, now, events, mem)
        elif m == "probe_icmp":
            key = entity_key(tenant, site, UPLINK)
            mem = self._st(key).mem
            cond.record_icmp(p, mem, now)
            quality = entity_key(tenant, site, UPLINK_QUALITY)
            for k, obs in ((key, cond.uplink_down(mem)), (quality, cond.uplink_quality(mem, th))):
                if obs is not None:
                    self._observe(k, obs, now, events)
        elif m == "probe_throughput":
            key = entity_key(tenant, site, UPLINK_THROUGHPUT)
            mem = self._mem(key)
            obs = cond.throughput_observation(p, mem, th)
            if obs is not None:
                self._observe(key, obs, now, events, mem)
        elif m == "uplink":
            obs = cond.saturation_observation(p, th, self._lesson_time(tenant, now))
            if obs is not None:
                self._observe(entity_key(tenant, site, UPLINK_SATURATION), obs, now, events)
        elif m == "ap":
            name = p.tags.get("ap")
            # An AP polled itself (role: ap in the inventory) is a device entity already.
            if name and entity_key(tenant, site, DEVICE, name) not in self.tree:
                placed = self.aps.on_ap_point(tenant, site, p, now)
                if placed is not None:
                    self.tree.add_ap(tenant, site, placed.controller, placed.name)
        elif m == "snmp_error" and self.aps.windows and p.tags.get("writes", "ap") == "ap":
            # Only a failed table of ``ap`` points leaves APs out of the poll; a sensor
            # or LLDP table that times out does not (no ``writes`` tag: an older agent).
            self.aps.on_error(tenant, site, p.tags.get("device", ""))

    def _check_agent(self, tenant: str, site: str, now: float, events: Events) -> None:
        key = entity_key(tenant, site, AGENT)
        st = self.states.get(key)
        mem = st.mem if st else {}
        s = self.sites[(tenant, site)]
        silent = now - self.seen[(tenant, site)] if self.connected else None
        limit = s.thresholds.silent_intervals * s.agent.poll_interval_s
        obs = cond.agent_observation(mem.get("status", "online"), mem.get("reason", ""),
                                     silent, limit)
        if st is None and not obs.bad:
            return  # the common case: fine and nothing remembered
        self._observe(key, obs, now, events)

    def _judge_aps(self, tenant: str, site: str, verdicts: list[Verdict], th: Thresholds,
                   now: float, events: Events) -> None:
        """Observe each learned AP of a controller after one complete poll of it."""
        changed = False
        for v in verdicts:
            if v.key not in self.tree:
                continue
            mem = self._mem(v.key)
            obs = cond.ap_observation(v.state, v.ap.controller, v.ap.status, v.ap.clients,
                                      mem, th)
            was = self._bad(v.key)
            self._observe(v.key, obs, now, events, mem)
            changed = changed or self._bad(v.key) != was
        if changed:
            self._check_aps(tenant, site, th, now, events)

    def _check_aps(self, tenant: str, site: str, th: Thresholds, now: float,
                   events: Events) -> None:
        """Recount the site's APs that are down for no reason further up the tree."""
        key = entity_key(tenant, site, APS)
        if key not in self.tree:
            return
        aps = [*self.tree.aps.get((tenant, site), ()), *self.aps.site_aps(tenant, site)]
        down = sum(1 for ap in aps if self._bad(ap) and not any(
            self._bad(a) for a in self.tree.ancestors(ap, skip=key)))
        self._observe(key, cond.aps_observation(down, len(aps), th), now, events)

    # -- the state machine ----------------------------------------------------------

    def _st(self, key: str) -> EntityState:
        st = self.states.get(key)
        if st is None:
            st = self.states[key] = EntityState()
        return st

    def _mem(self, key: str) -> dict[str, Any]:
        """The condition memory of ``key`` (a fresh, unstored dict for a quiet entity)."""
        st = self.states.get(key)
        return st.mem if st is not None else {}

    def _bad(self, key: str) -> bool:
        st = self.states.get(key)
        return st is not None and st.bad

    def _th(self, key: str) -> Thresholds:
        return self.sites[self.tree.site_of(key)].thresholds

    def _hold(self, key: str) -> float:
        th = self._th(key)
        kind = self.tree[key].kind
        if kind == UPLINK_QUALITY:
            return th.degraded_for_s
        if kind == UPLINK_SATURATION:
            return th.saturated_for_s
        return th.hold_down_s

    def _observe(self, key: str, obs: cond.Observation, now: float, events: Events,
                 mem: dict[str, Any] | None = None) -> None:
        st = self.states.get(key)
        if st is None:
            if not (obs.bad or obs.suspect or mem):
                return  # fine before, fine now, nothing to remember: the common case
            st = self.states[key] = EntityState(mem=mem if mem is not None else {})
        changed = obs.suspect != st.suspect
        st.suspect = obs.suspect
        st.observed = now
        if obs.bad != st.bad:
            changed = True
            st.bad = obs.bad
            st.since = now if obs.bad else None
            self._flip(key, st, now, events)
        if obs.bad and obs.detail != st.detail:
            st.detail = obs.detail
            o = self.open.get(st.outage) if st.outage is not None else None
            if o is not None:
                o.detail = obs.detail
                self._dirty_outages[o.id] = o
            changed = True
        if changed or st.mem:
            self._dirty_states.add(key)
        before = len(events)
        if changed or st.bad or st.outage is not None:
            self._settle(key, now, events)
        if len(events) > before:
            # An outage opened or closed here: descendants waiting on it may move now.
            for d in sorted(self.tree.descendants(key), key=lambda k: self.tree[k].depth):
                if d in self.states:
                    self._settle(d, now, events)
        self._forget_if_default(key)

    def _forget_if_default(self, key: str) -> None:
        st = self.states.get(key)
        if st is not None and st.is_default():
            del self.states[key]
            self._dirty_states.add(key)

    def _flip(self, key: str, st: EntityState, now: float, events: Events) -> None:
        th = self._th(key)
        recent = [t for t in st.flips if now - t <= th.flap_window_s][-999:]
        st.flips = [*recent, now]
        st.last_flip = now
        o = self.open.get(st.outage) if st.outage is not None else None
        if o is not None:
            o.flaps += 1
            self._dirty_outages[o.id] = o
        if st.flapping or len(st.flips) < th.flap_transitions:
            return
        st.flapping = True
        if o is None:
            self._open(key, now, events, flapping=True)
        else:
            o.flapping = True
            if o.notified:
                events.append(OutageEvent(UPDATE, o.copy(), "flapping", now))

    def _settle(self, key: str, now: float, events: Events) -> None:
        """Apply every time-dependent rule to one entity."""
        st = self.states.get(key)
        if st is None:
            return
        th = self._th(key)
        o = self.open.get(st.outage) if st.outage is not None else None
        if o is None and st.outage is not None:
            st.outage = None  # its outage is gone (resolved elsewhere): forget the link
            self._dirty_states.add(key)
        if st.flapping:
            if st.last_flip is not None and now - st.last_flip < th.flap_quiet_s:
                return  # quiet until stable
            st.flapping = False
            st.flips = []
            self._dirty_states.add(key)
            if o is not None:
                o.flapping = False
                self._dirty_outages[o.id] = o
                if st.bad and o.notified:
                    events.append(OutageEvent(UPDATE, o.copy(), "still_down", now))
                if not st.bad:
                    self._resolve(o, now, events)
                    return
        if o is None:
            if st.bad and st.since is not None and now - st.since >= self._hold(key) \
                    and not self._ancestor_pending(key):
                self._open(key, now, events)
            return
        if o.notified:
            if not st.bad and now - o.opened >= th.min_open_s:
                self._resolve(o, now, events)
            return
        # Affected, or released and waiting to confirm.
        if not st.bad:
            self._resolve(o, now, events)
            return
        root = self._open_root(key)
        if root is not None:
            if o.root != root:
                self._attach(o, root)
            o.release_at = o.release_since = None
            return
        if o.release_at is None:  # its root is gone (restart, inventory change)
            self._start_release(o, now)
        assert o.release_at is not None and o.release_since is not None
        if now >= o.release_at and st.observed > o.release_since \
                and not self._ancestor_pending(key):
            o.release_at = o.release_since = None
            o.notified = True
            self._dirty_outages[o.id] = o
            events.append(OutageEvent(OPEN, o.copy(), "released", now))

    def _ancestor_pending(self, key: str) -> bool:
        for a in self.tree.ancestors(key):
            st = self.states.get(a)
            if st is not None and st.bad and st.outage is None:
                return True
        return False

    def _open_root(self, key: str) -> int | None:
        """The root outage ``key`` would be affected by: its nearest open ancestor's."""
        for a in self.tree.ancestors(key):
            st = self.states.get(a)
            if st is not None and st.outage is not None and st.outage in self.open:
                o = self.open[st.outage]
                return o.root if o.root is not None else o.id
        return None

    def _attach(self, o: Outage, root: int) -> None:
        o.root = root
        r = self.open[root]
        if o.id not in r.affected_ids:
            r.affected_ids.append(o.id)
            self._dirty_outages[root] = r
        self._dirty_outages[o.id] = o

    def _start_release(self, o: Outage, now: float) -> None:
        o.released_from = o.root if o.root is not None else o.released_from
        o.root = None
        o.release_since = now
        o.release_at = now + self._hold(o.key)
        self._dirty_outages[o.id] = o

    def _open(self, key: str, now: float, events: Events, *, flapping: bool = False) -> None:
        e = self.tree[key]
        st = self._st(key)
        root = self._open_root(key)
        o = Outage(id=self._next_id(), key=key, tenant=e.tenant, site=e.site, kind=e.kind,
                   name=e.name, started=st.since if st.since is not None else now,
                   opened=now, notified=root is None, flapping=flapping,
                   detail=dict(st.detail))
        self.open[o.id] = o
        st.outage = o.id
        self._dirty_states.add(key)
        self._dirty_outages[o.id] = o
        if root is not None:
            self._attach(o, root)
            events.append(OutageEvent(AFFECTED, o.copy(), "", now))
        else:
            events.append(OutageEvent(OPEN, o.copy(), "flapping" if flapping else "", now))

    def _resolve(self, o: Outage, now: float, events: Events, note: str = "") -> None:
        o.closed = now
        o.release_at = o.release_since = None
        self.open.pop(o.id, None)
        self._dirty_outages[o.id] = o
        st = self.states.get(o.key)
        if st is not None and st.outage == o.id:
            st.outage = None
            self._dirty_states.add(o.key)
            self._forget_if_default(o.key)
        events.append(OutageEvent(RESOLVE, o.copy(), note, now))
        dependents = [d for d in self.open.values() if d.root == o.id]
        for d in sorted(dependents, key=lambda d: self.tree.entities[d.key].depth
                        if d.key in self.tree else 0):
            if d.id not in self.open:
                continue  # resolved already as a dependent of an earlier one
            d.root = None
            new_root = self._open_root(d.key) if d.key in self.tree else None
            if new_root is not None:
                self._attach(d, new_root)
            elif not self._bad(d.key):
                self._resolve(d, now, events)
            else:
                d.root = o.id
                self._start_release(d, now)

    # -- queries and persistence ----------------------------------------------------

    def affected(self, outage: Outage) -> tuple[int, int]:
        """(devices behind the outage's entity that are down or unknown, devices behind)."""
        if outage.key not in self.tree:
            return 0, 0
        devices = [d for d in self.tree.descendants(outage.key)
                   if self.tree[d].kind in DEVICE_KINDS]
        if outage.kind == AGENT:
            return len(devices), len(devices)  # no data at all while the agent is away
        down = 0
        for d in devices:
            st = self.states.get(d)
            if st is not None and (st.bad or st.suspect or st.outage is not None):
                down += 1
        return down, len(devices)

    def _place(self, ap: LearnedAp) -> None:
        if (ap.tenant, ap.site) in self.sites:
            self.tree.add_ap(ap.tenant, ap.site, ap.controller, ap.name)

    def take_changes(self) -> tuple[dict[str, EntityState | None], list[Outage]]:
        """What changed since the last call: states (None: back to default) and outages."""
        states = {k: self.states.get(k) for k in self._dirty_states}
        outages = list(self._dirty_outages.values())
        self._dirty_states.clear()
        self._dirty_outages.clear()
        return states, outages

    def forget_ap(self, key: str, now: float, code: str = "ap_forgotten") -> Events:
        """Stop expecting a learned AP: its open outage resolves, it leaves the tree.

        ``code`` is the finding of that outage's last mail: ``ap_forgotten`` (support
        said so) or ``ap_decommissioned`` (not listed by any controller for long).
        """
        events: Events = []
        ap = self.aps.forget(key)
        if ap is None:
            return events
        st = self.states.get(key)
        o = self.open.get(st.outage) if st is not None and st.outage is not None else None
        if o is not None:
            o.detail = {"code": code, "controller": ap.controller,
                        "clients": "?" if ap.clients is None else ap.clients,
                        "days": round(self.ap_forget_s / 86400, 1)}
            self._resolve(o, now, events, note="forgotten")
        if key in self.states:
            del self.states[key]
            self._dirty_states.add(key)
        self.tree.remove(key)
        site = self.sites.get((ap.tenant, ap.site))
        if site is not None:
            self._check_aps(ap.tenant, ap.site, site.thresholds, now, events)
        return events

    def restore(self, states: dict[str, dict[str, Any]], outages: Iterable[dict[str, Any]],
                now: float, aps: Iterable[dict[str, Any]] = ()) -> Events:
        """Load persisted state; outages of entities no longer in the inventory resolve.

        ``aps``: the learned APs (before the states: their entities must exist).
        """
        events: Events = []
        for ap in self.aps.restore(aps, now):
            self._place(ap)
        for key, doc in states.items():
            if key in self.tree:
                self.states[key] = EntityState.from_json(doc)
        for doc in outages:
            o = Outage.from_json(doc)
            if o.closed is None:
                self.open[o.id] = o
        for o in sorted(self.open.values(), key=lambda o: o.id):
            st = self.states.get(o.key)
            orphan = o.key not in self.tree or st is None or st.outage != o.id
            if orphan and o.id in self.open:
                self._resolve(o, now, events, note="removed")
        return events
