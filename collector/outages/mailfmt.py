"""The alert mails: subjects, bodies (German or English), threading headers.

Subjects are what ticket systems thread and filter on, so their shape is fixed::

    [schoolnet #1042] herne Pestalozzi-Gymnasium: Internet-Anbindung DOWN
    [schoolnet #1042] herne Pestalozzi-Gymnasium: Internet-Anbindung RESOLVED after 37 min

The state words (DOWN, DEGRADED, FLAPPING, RESOLVED) stay English in every language.
Every mail of an outage carries ``Message-ID`` ``<1042.down.<token>@<domain>>`` style
ids; later ones reply to the DOWN mail (``In-Reply-To``/``References``), so mail
clients and ticket systems put them in one thread. Names come from the inventory and the
network: :func:`clean` strips control characters (no header injection, no fake body
lines), and :class:`email.message.EmailMessage` with the SMTP policy encodes the rest.
"""

from __future__ import annotations

import datetime as dt
import email.policy
import re
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any, Final
from zoneinfo import ZoneInfo

from collector.outages.dispatch import (
    DIGEST,
    DOWN,
    REMINDER,
    RESOLVED,
    MailOrder,
)
from collector.outages.model import Outage

#: SMTP line endings; lines up to RFC 5322's hard limit. The default (78) makes the
#: email package fold a subject right after "Subject:" or around encoded words, and
#: the parsed subject then gains spaces: ticket systems match on the exact prefix.
POLICY: Final = email.policy.SMTP.clone(max_line_length=998)
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")

WHAT: Final = {
    "de": {"agent": "Standort-Agent (Verbindung)", "uplink": "Internet-Anbindung",
           "uplink_quality": "Internet-Anbindung (Qualität)",
           "uplink_throughput": "Internet-Anbindung (Bandbreite)",
           "uplink_saturation": "Internet-Anbindung (Auslastung)",
           "aps": "WLAN-Access-Points", "device": "Gerät {name}", "interface": "Port {name}",
           "ap": "Access-Point {name}"},
    "en": {"agent": "agent connection", "uplink": "uplink",
           "uplink_quality": "uplink quality", "uplink_throughput": "uplink throughput",
           "uplink_saturation": "uplink saturation", "aps": "access points",
           "device": "device {name}", "interface": "port {name}", "ap": "access point {name}"},
}
DETAIL: Final = {
    "de": {"offline": "Verbindung zum Broker verloren ({reason})",
           "silent": "seit {seconds} s keine Daten vom Standort",
           "no_answer": "antwortet nicht ({polls} Abfragen ohne Antwort)",
           "oper_down": "Port ist aus (oper-down bei admin-up, Status {oper_status})",
           "all_lost": "alle {targets} Ziele ohne Antwort (100 % Verlust)",
           "degraded": "Verlust {loss_pct} %, Latenz {rtt_ms} ms",
           "slow": "Durchsatz ({direction}) bei {ratio_pct} % des Vertrags in {tests} Tests",
           "saturated": "Auslastung ({direction}) {util_pct} % in der Unterrichtszeit",
           "aps_down": "{down} von {total} Access-Points aus",
           "removed": "aus dem Inventar entfernt",
           "ap_missing": "fehlt in der AP-Liste des Controllers {controller} ({polls} Abfragen)",
           "ap_not_up": "Controller {controller} meldet Status {status} ({polls} Abfragen)",
           "ap_forgotten": "wird nicht mehr erwartet (auf Anweisung vergessen)",
           "ap_decommissioned": "seit {days} Tagen von keinem Controller gemeldet, wird "
                                "nicht mehr erwartet"},
    "en": {"offline": "lost its broker connection ({reason})",
           "silent": "no data from the site for {seconds} s",
           "no_answer": "does not answer ({polls} polls without answer)",
           "oper_down": "port is down (oper-down while admin-up, status {oper_status})",
           "all_lost": "all {targets} targets lost (100 % loss)",
           "degraded": "loss {loss_pct} %, latency {rtt_ms} ms",
           "slow": "throughput ({direction}) at {ratio_pct} % of the contract in {tests} tests",
           "saturated": "utilization ({direction}) {util_pct} % during lessons",
           "aps_down": "{down} of {total} access points down",
           "removed": "removed from the inventory",
           "ap_missing": "missing from the AP table of controller {controller} ({polls} polls)",
           "ap_not_up": "controller {controller} reports status {status} ({polls} polls)",
           "ap_forgotten": "no longer expected (forgotten on request)",
           "ap_decommissioned": "not listed by any controller for {days} days, no longer "
                                "expected"},
}
TEXT: Final = {
    "de": {"tenant": "Schulträger", "site": "Standort", "what": "Was", "finding": "Befund",
           "since": "Seit", "detected": "erkannt", "until": "Behoben", "duration": "Dauer",
           "affected": "Betroffen",
           "affected_n": "{down} von {total} Geräten dahinter ausgefallen oder ohne Daten "
                         "(nicht einzeln gemeldet)",
           "affected_hist": "{n} abhängige Störungen während des Ausfalls (nicht einzeln "
                            "gemeldet)",
           "outage": "Störung",
           "late": "Jetzt gemeldet: entstanden außerhalb der Unterrichtszeit oder im "
                   "Wartungsfenster, seitdem offen.",
           "flapping": "Wechselt ständig zwischen aus und an ({flaps} Wechsel); weitere "
                       "Wechsel werden nicht gemeldet, bis es stabil ist.",
           "released": "War zuerst Folge von Störung #{root}; die ist behoben, diese nicht.",
           "still": "Seit {duration} ausgefallen (Erinnerung {n}).",
           "still_down": "Wechselt nicht mehr, ist aber weiterhin ausgefallen.",
           "digest": "Übersicht", "digest_intro": "Störungen seit der letzten Übersicht "
                     "(außerhalb der Unterrichtszeit oder im Wartungsfenster):",
           "open": "offen", "resolved": "behoben nach {duration}",
           "reason_lost": "Verbindung abgerissen", "reason_shutdown": "Agent beendet",
           "controller": "Controller", "clients": "Clients zuletzt"},
    "en": {"tenant": "Tenant", "site": "Site", "what": "What", "finding": "Finding",
           "since": "Since", "detected": "detected", "until": "Resolved", "duration": "Duration",
           "affected": "Affected",
           "affected_n": "{down} of {total} devices behind it down or without data "
                         "(not mailed one by one)",
           "affected_hist": "{n} dependent outages during the outage (not mailed one by one)",
           "outage": "Outage",
           "late": "Mailed now: opened outside lesson hours or in a maintenance window, open "
                   "ever since.",
           "flapping": "Keeps going down and up ({flaps} changes); no further mail until it "
                       "is stable.",
           "released": "First a consequence of outage #{root}; that one is resolved, this "
                       "one is not.",
           "still": "Down for {duration} (reminder {n}).",
           "still_down": "No longer flapping, but still down.",
           "digest": "summary", "digest_intro": "Outages since the last summary (outside "
                     "lesson hours or in a maintenance window):",
           "open": "open", "resolved": "resolved after {duration}",
           "reason_lost": "connection lost", "reason_shutdown": "agent stopped",
           "controller": "Controller", "clients": "Last known clients"},
}
DEGRADED_KINDS: Final = frozenset({"uplink_quality", "uplink_throughput", "uplink_saturation"})


def clean(text: object, limit: int = 120) -> str:
    """One line of text from an untrusted name: no control characters, bounded length."""
    s = _CONTROL.sub(" ", str(text)).strip()
    s = re.sub(r"\s{2,}", " ", s)
    return s if len(s) <= limit else s[: limit - 1] + "…"


def duration(seconds: float, lang: str) -> str:
    """``37 min``, ``4 h 10 min``, ``2 d 3 h`` (German uses ``Tg`` for days)."""
    m = max(0, round(seconds / 60))
    if m < 60:
        return f"{m} min"
    h, m = divmod(m, 60)
    if h < 48:
        return f"{h} h {m} min" if m else f"{h} h"
    d, h = divmod(h, 24)
    return f"{d} {'Tg' if lang == 'de' else 'd'} {h} h"


def what(outage: Outage | dict[str, Any], lang: str) -> str:
    """The entity in words: ``Internet-Anbindung``, ``device core-sw``."""
    kind = outage.kind if isinstance(outage, Outage) else outage["kind"]
    name = outage.name if isinstance(outage, Outage) else outage["name"]
    # An interface is "<device>/<ifname>", and ifNames have slashes of their own.
    return clean(WHAT[lang].get(kind, kind).format(name=name.replace("/", " ", 1)))


def finding(detail: dict[str, Any], lang: str) -> str:
    """The localised detail of a condition."""
    code = str(detail.get("code", ""))
    params = {k: clean(v, 60) for k, v in detail.items()}
    if code == "offline":
        reason = str(detail.get("reason", ""))
        params["reason"] = TEXT[lang].get(f"reason_{reason}", clean(reason, 60) or "?")
    if code == "slow":
        params["ratio_pct"] = str(round(float(detail.get("ratio", 0)) * 100))
    try:
        return clean(DETAIL[lang][code].format(**params), 200)
    except (KeyError, ValueError, IndexError):
        return clean(code or "?", 60)


def state_word(o: Outage, kind: str) -> str:
    """DOWN / DEGRADED / FLAPPING for the opening mail of an outage."""
    if kind == DOWN and o.flapping:
        return "FLAPPING"
    return "DEGRADED" if o.kind in DEGRADED_KINDS else "DOWN"


class MailFormatter:
    """Builds the :class:`EmailMessage` of a :class:`MailOrder`."""

    def __init__(self, *, sender: str, token: str, domain: str,
                 tenant_names: dict[str, str], site_names: dict[tuple[str, str], str],
                 languages: dict[str, str], zones: dict[str, str]) -> None:
        self.sender = sender
        self.token = token
        self.domain = domain
        self.tenant_names = tenant_names
        self.site_names = site_names
        self.languages = languages
        self.zones = zones

    def message_id(self, outage_id: int | str, part: str) -> str:
        """``<1042.down.<token>@<domain>>``: unique per installation (the token)."""
        return f"<{outage_id}.{part}.{self.token}@{self.domain}>"

    def _local(self, tenant: str, ts: float) -> str:
        zone = ZoneInfo(self.zones.get(tenant, "Europe/Berlin"))
        return dt.datetime.fromtimestamp(ts, zone).strftime("%d.%m.%Y %H:%M")

    def build(self, order: MailOrder, recipients: tuple[str, ...],
              affected: tuple[int, int] = (0, 0)) -> EmailMessage:
        """The mail for ``order``; ``affected`` = (down, total) devices behind the entity."""
        lang = self.languages.get(order.tenant, "de")
        if order.kind == DIGEST:
            return self._digest(order, recipients, lang)
        o = order.outage
        assert o is not None
        site_name = clean(self.site_names.get((o.tenant, o.site), o.site), 80)
        prefix = f"[schoolnet #{o.id}] {clean(o.tenant, 40)} {site_name}: {what(o, lang)}"
        t = TEXT[lang]
        lines = self._facts(o, lang)
        if order.kind == DOWN:
            subject = f"{prefix} {state_word(o, DOWN)}"
            mid, parent = self.message_id(o.id, "down"), None
            if affected[1]:
                n = t["affected_n"].format(down=affected[0], total=affected[1])
                lines.append(f"{t['affected']}: {n}")
            if o.flapping:
                lines += ["", t["flapping"].format(flaps=o.flaps)]
            if o.released_from is not None:
                lines += ["", t["released"].format(root=o.released_from)]
            if order.late:
                lines += ["", t["late"]]
        elif order.kind == RESOLVED:
            took = duration((o.closed or order.at) - o.started, "en")
            subject = f"{prefix} RESOLVED after {took}"
            mid, parent = self.message_id(o.id, "resolved"), self.message_id(o.id, "down")
            lines.append(f"{t['until']}: {self._local(o.tenant, o.closed or order.at)}")
            lines.append(f"{t['duration']}: {duration((o.closed or order.at) - o.started, lang)}")
            if o.affected_ids:
                n = t["affected_hist"].format(n=len(o.affected_ids))
                lines.append(f"{t['affected']}: {n}")
        elif order.kind == REMINDER:
            took = duration(order.at - o.started, lang)
            subject = f"{prefix} {state_word(o, DOWN)} ({duration(order.at - o.started, 'en')})"
            mid = self.message_id(o.id, f"reminder{order.reminder}")
            parent = self.message_id(o.id, "down")
            lines += ["", t["still"].format(duration=took, n=order.reminder)]
        else:  # STILL_DOWN
            subject = f"{prefix} DOWN"
            mid, parent = self.message_id(o.id, f"still{int(order.at)}"), \
                self.message_id(o.id, "down")
            lines += ["", t["still_down"]]
        return self._message(subject, "\n".join(lines), recipients, mid, parent, order.at)

    def _facts(self, o: Outage, lang: str) -> list[str]:
        t = TEXT[lang]
        tenant = clean(self.tenant_names.get(o.tenant, o.tenant), 80)
        site = clean(self.site_names.get((o.tenant, o.site), o.site), 80)
        lines = [
            f"{t['tenant']}: {tenant} ({clean(o.tenant, 40)})",
            f"{t['site']}: {site} ({clean(o.site, 40)})",
            f"{t['what']}: {what(o, lang)}",
        ]
        if "controller" in o.detail:  # an AP behind a WLAN controller
            lines.append(f"{t['controller']}: {clean(o.detail['controller'], 80)}")
            if "clients" in o.detail:
                lines.append(f"{t['clients']}: {clean(o.detail['clients'], 20)}")
        return [
            *lines,
            f"{t['finding']}: {finding(o.detail, lang)}",
            f"{t['since']}: {self._local(o.tenant, o.started)} "
            f"({t['detected']} {self._local(o.tenant, o.opened)})",
            f"{t['outage']}: #{o.id}",
        ]

    def _digest(self, order: MailOrder, recipients: tuple[str, ...], lang: str) -> EmailMessage:
        t = TEXT[lang]
        tenant = clean(self.tenant_names.get(order.tenant, order.tenant), 80)
        subject = (f"[schoolnet] {clean(order.tenant, 40)}: {t['digest']} "
                   f"{self._local(order.tenant, order.at)} ({len(order.items)})")
        lines = [f"{t['tenant']}: {tenant}", "", t["digest_intro"], ""]
        for item in order.items:
            o = Outage.from_json(item.outage)
            site = clean(self.site_names.get((o.tenant, o.site), o.site), 80)
            state = t["resolved"].format(duration=duration((o.closed or order.at) - o.started,
                                                           lang)) if item.resolved else t["open"]
            lines.append(f"#{o.id} {self._local(o.tenant, o.started)} {site}: {what(o, lang)} "
                         f"- {finding(o.detail, lang)} - {state}")
        mid = self.message_id(f"digest-{clean(order.tenant, 40)}-{int(order.at)}", "summary")
        return self._message(subject, "\n".join(lines), recipients, mid, None, order.at)

    def _message(self, subject: str, body: str, recipients: tuple[str, ...], mid: str,
                 parent: str | None, at: float) -> EmailMessage:
        msg = EmailMessage(policy=POLICY)
        msg["From"] = self.sender
        msg["To"] = ", ".join(recipients)
        msg["Subject"] = clean(subject, 200)
        msg["Date"] = format_datetime(dt.datetime.fromtimestamp(at, dt.UTC))
        msg["Message-ID"] = mid
        if parent is not None:
            msg["In-Reply-To"] = parent
            msg["References"] = parent
        msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to alerts
        msg["X-Schoolnet-Outage"] = mid.split(".", 1)[0].lstrip("<")
        msg.set_content(body + "\n\n-- \nschoolnet\n")
        return msg
