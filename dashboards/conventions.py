"""What every schoolnet dashboard shares: filters, time windows, states, colours, variables.

The conventions of every query (docs/dashboards.md):

* filtered by ``"tenant" =~ /^$tenant$/ AND "site" =~ /^$site$/`` (the variables; no
  tenant or site is ever written into a query);
* every shown column named with ``AS "..."`` (the query test checks those columns);
* "now" panels look at the last 15 minutes (:data:`RECENT`), whatever the time range;
  "open outage" panels at the outage history the collector keeps (:data:`OPEN_WINDOW`,
  its ``alerting.history_days`` default), so an outage opened weeks ago still shows;
* only functions InfluxDB 3's InfluxQL also has (no SLIMIT, INTEGRAL, SAMPLE, HOLT_WINTERS).
"""

from __future__ import annotations

from typing import Final

from dashboards.grafana import (
    BLUE,
    GREEN,
    GREY,
    ORANGE,
    RED,
    Json,
    annotation,
    colored_cell,
    override,
    tag_variable,
    value_mappings,
)

SITES: Final = '"tenant" =~ /^$tenant$/ AND "site" =~ /^$site$/'
RECENT: Final = "time > now() - 15m"
OPEN_WINDOW: Final = "time > now() - 90d"
#: Targets beyond the school's own network: what the uplink is judged by (as the
#: outage engine does, collector/outages/conditions.py).
EXTERNAL: Final = '"target_kind" !~ /^(gateway|lan)$/'
#: PoE budget points (one per power source) have no port tag; port points do.
POE_BUDGET: Final = "\"ifindex\" = ''"
#: AP states that mean "serving clients" (Aruba: up; Cisco: associated).
AP_UP: Final = "/^(up|associated)$/"
#: Outage kinds that mean "the school is cut off" (the rest: degraded).
DOWN_KINDS: Final = "/^(agent|uplink)$/"

#: Site state codes of the NOC grid; max() over a site's rows picks the one shown, so
#: maintenance (someone is on it) wins over down, down over degraded.
UP, DEGRADED, DOWN, MAINTENANCE = 0, 1, 2, 3
SITE_STATES: Final = value_mappings({
    UP: ("UP", GREEN), DEGRADED: ("DEGRADED", ORANGE), DOWN: ("DOWN", RED),
    MAINTENANCE: ("MAINTENANCE", BLUE)})
UP_DOWN: Final = value_mappings({1: ("UP", GREEN), 0: ("DOWN", RED)}, null=("no data", GREY))
OK_FAIL: Final = value_mappings({1: ("OK", GREEN), 0: ("FAIL", RED)})
#: Outage kinds as the NOC reads them; red: the school is cut off.
OUTAGE_KINDS: Final = value_mappings({
    "agent": ("site offline", RED), "uplink": ("uplink down", RED),
    "uplink_quality": ("uplink degraded", ORANGE),
    "uplink_throughput": ("below contract", ORANGE),
    "uplink_saturation": ("uplink saturated", ORANGE), "aps": ("access points", ORANGE),
    "device": ("device down", ORANGE), "interface": ("port down", ORANGE)})

SINCE: Final = override("Time", unit="dateTimeFromNow", displayName="Since")
LAST_SEEN: Final = override("Time", unit="dateTimeFromNow", displayName="Last data")
KIND: Final = override("kind", mappings=OUTAGE_KINDS, custom_cellOptions=colored_cell())
SCHOOL_LINK: Final = {
    "title": "School detail",
    "url": "/d/schoolnet-school/?var-tenant=${__data.fields.tenant}"
           "&var-site=${__data.fields.site}&${__url_time_range}",
}


def variables(*, multi: bool) -> list[Json]:
    """``$tenant`` and ``$site`` (schools of the chosen authorities), from the ``agent``
    measurement every site box writes; ``multi``: several and All."""
    return [
        tag_variable("tenant", "School authority",
                     'SHOW TAG VALUES FROM "agent" WITH KEY = "tenant"', multi=multi),
        tag_variable("site", "School",
                     'SHOW TAG VALUES FROM "agent" WITH KEY = "site" '
                     'WHERE "tenant" =~ /^$tenant$/', multi=multi),
    ]


#: Root outages (not the ones recorded as affected by another) as annotations.
OUTAGE_ANNOTATION: Final = annotation(
    "Outages",
    'SELECT "event" AS "event", "id" AS "id", "site" AS "site", "kind" AS "kind", '
    f'"entity" AS "entity" FROM "outage" WHERE {SITES} AND "root" = 0 AND $timeFilter',
    text="event", tags="site,kind,entity", color=RED)


def open_outages_query(columns: str, outer: str = "") -> str:
    """The latest event of every outage entity, kept where it is still open."""
    return (f"SELECT {columns} FROM (SELECT last(\"open\") AS \"open\", \"id\", \"event\", "
            '"affected", "notified", "root", "duration_s" FROM "outage" '
            f'WHERE {SITES} AND {OPEN_WINDOW} GROUP BY "tenant", "site", "kind", "entity") '
            f'WHERE "open" = 1 AND "root" = 0 AND {OPEN_WINDOW}{outer}')
