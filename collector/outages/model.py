"""The records of the outage engine: entity state, outages, events. Plain data, JSON-able.

Both survive a collector restart through :mod:`collector.outages.store`: an
:class:`EntityState` is the damping state of one entity (condition, since when, recent
flips, the condition's memory), an :class:`Outage` is one problem with its stable id.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any

#: Event kinds the engine emits.
OPEN = "open"  # a notifiable outage opened (or a formerly affected one is now its own)
AFFECTED = "affected"  # an outage opened below an open ancestor: recorded, not mailed
RESOLVE = "resolve"  # an outage closed
UPDATE = "update"  # a notifiable outage changed: note "flapping" or "still_down"


@dataclass
class EntityState:
    """What the engine remembers about one entity. The default (all fine) is not stored."""

    bad: bool = False
    #: When the condition became true (start of hold-down).
    since: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    #: The latest raw sample failed (a device with one failed poll of two needed).
    suspect: bool = False
    #: When the latest observation came (engine clock).
    observed: float = 0.0
    #: Times of recent condition changes (within the flap window).
    flips: list[float] = field(default_factory=list)
    flapping: bool = False
    last_flip: float | None = None
    #: Id of the open outage of this entity.
    outage: int | None = None
    #: The condition's own memory (consecutive failures, latest result per target).
    mem: dict[str, Any] = field(default_factory=dict)

    def is_default(self) -> bool:
        """Whether nothing is worth remembering (the entity is fine and quiet)."""
        return not (self.bad or self.suspect or self.flips or self.flapping or self.mem
                    or self.outage is not None)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> EntityState:
        """The state a :meth:`to_json` dict describes (unknown keys ignored)."""
        known = {k: v for k, v in doc.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class Outage:
    """One problem of one entity, from opening to resolution, with a stable id."""

    id: int
    key: str
    tenant: str
    site: str
    kind: str
    name: str
    #: When the condition became true; when the outage opened (after hold-down).
    started: float
    opened: float
    closed: float | None = None
    #: Id of the outage this one is *affected* by (recorded, never mailed on its own).
    root: int | None = None
    #: An "open" event was emitted: the outage is (or will be) mailed, so it must also
    #: get its "resolve" mailed.
    notified: bool = False
    flapping: bool = False
    #: Condition changes while open (flapping shows up here).
    flaps: int = 0
    detail: dict[str, Any] = field(default_factory=dict)
    #: A formerly affected outage whose root recovered: it becomes its own outage at
    #: ``release_at`` if it is still bad, confirmed by a sample after ``release_since``.
    release_since: float | None = None
    release_at: float | None = None
    released_from: int | None = None
    #: Ids of the outages that were affected by this one (history, for the mails).
    affected_ids: list[int] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        """Whether the outage has not been resolved."""
        return self.closed is None

    def copy(self) -> Outage:
        """A snapshot (events carry snapshots: the engine keeps changing the original)."""
        return copy.deepcopy(self)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Outage:
        """The outage a :meth:`to_json` dict describes (unknown keys ignored)."""
        known = {k: v for k, v in doc.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass(frozen=True)
class OutageEvent:
    """Something that happened to an outage; the dispatcher decides about mail."""

    kind: str  # OPEN | AFFECTED | RESOLVE | UPDATE
    outage: Outage
    note: str = ""  # "flapping", "released", "still_down", "removed"
    at: float = 0.0
