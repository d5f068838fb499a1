"""What the NOC sees: the five schoolnet dashboards as data (panels, InfluxQL, units).

Measurements and fields are the ones in docs/data-model.md; docs/dashboards.md lists
which panel reads what, and what still waits for data. The conventions every query
follows (filters, time windows, named columns, portable InfluxQL) are in
:mod:`dashboards.conventions`.
"""

from __future__ import annotations

from typing import Final

from dashboards.conventions import (
    AP_UP,
    DEGRADED,
    DOWN,
    DOWN_KINDS,
    EXTERNAL,
    KIND,
    LAST_SEEN,
    MAINTENANCE,
    OK_FAIL,
    OPEN_WINDOW,
    OUTAGE_ANNOTATION,
    RECENT,
    SCHOOL_LINK,
    SINCE,
    SITE_STATES,
    SITES,
    UP_DOWN,
    open_outages_query,
    variables,
)
from dashboards.grafana import (
    GREEN,
    GREY,
    NEUTRAL,
    RED,
    Json,
    Query,
    colored_cell,
    dashboard,
    exclude,
    group_max,
    higher_is_worse,
    limit,
    lower_is_worse,
    merge,
    override,
    rename,
    series_to_rows,
    stat,
    state_timeline,
    table,
    thresholds,
    timeseries,
    value_mappings,
)
from dashboards.school import school_detail

# -- NOC overview -----------------------------------------------------------------------

def noc_overview() -> Json:
    """Which schools are down now, which uplinks are bad, who stopped sending."""
    state_query = (
        'SELECT last("open") * {code} AS "state" FROM "outage" WHERE {sites} AND '
        '"kind" {op} {kinds} AND {window} GROUP BY "tenant", "site", "kind", "entity"')
    site_state = stat(
        "Site state",
        "One tile per school. DOWN: the site box or the uplink is unreachable (open "
        "outage). DEGRADED: another open outage (uplink quality, a device, a port, "
        "access points). MAINTENANCE: a maintenance window is active. Click a tile for "
        "the school.",
        [Query(influxql='SELECT last("uptime_s") * 0 AS "state" FROM "agent" '
                        f'WHERE {SITES} AND $timeFilter GROUP BY "tenant", "site"'),
         Query(influxql=state_query.format(code=DEGRADED, sites=SITES, op="!~",
                                           kinds=DOWN_KINDS, window=OPEN_WINDOW)),
         Query(influxql=state_query.format(code=DOWN, sites=SITES, op="=~",
                                           kinds=DOWN_KINDS, window=OPEN_WINDOW)),
         Query(influxql=f'SELECT last("active") * {MAINTENANCE} AS "state" '
                        f'FROM "maintenance" WHERE {SITES} AND {OPEN_WINDOW} '
                        'GROUP BY "tenant", "site"')],
        unit="none", w=24, h=5, per_row=True, text_mode="value_and_name",
        mappings=SITE_STATES, thresholds_=NEUTRAL,
        display_name="${__data.fields.site}", links=[SCHOOL_LINK],
        # Each query gives per-series values; one row per site with the worst state.
        transformations=[series_to_rows(), group_max(["tenant", "site"], "Last *"),
                         rename({"Last * (max)": "state"})])
    open_outages = table(
        "Open outages",
        "Every open outage that is not just a consequence of another (those are in "
        "'affected'). Since: time of its latest event (the opening, or a later "
        "flapping/still-down update). Affected: devices behind it that are down or "
        "without data.",
        [Query(influxql=open_outages_query(
            '"id" AS "id", "event" AS "event", "affected" AS "affected", '
            '"notified" AS "mailed", "duration_s" AS "held_s"',
            ' GROUP BY "tenant", "site", "kind", "entity"'), table=True)],
        unit="none", w=14, h=9, sort=("Time", True),
        overrides=[SINCE, KIND,
                   override("affected", thresholds=higher_is_worse(1, 10),
                            custom_cellOptions=colored_cell("color-text")),
                   override("mailed", mappings=value_mappings(
                       {1: ("yes", GREEN), 0: ("recorded", GREY)})),
                   override("held_s", unit="s", displayName="Held down")])
    worst_uplinks = table(
        "Worst uplinks now (15 min)",
        "Mean loss, latency and jitter to the external probe targets, and peak "
        "utilization of the contracted rate. Red: the outage engine's defaults "
        "(5 % loss, 150 ms).",
        [Query(influxql='SELECT mean("loss_pct") AS "loss", mean("rtt_avg_ms") AS "latency", '
                        'mean("jitter_ms") AS "jitter" FROM "probe_icmp" '
                        f'WHERE {SITES} AND {EXTERNAL} AND {RECENT} GROUP BY "tenant", "site"',
               table=True),
         Query(influxql='SELECT max("util_in_pct") AS "util_down", max("util_out_pct") AS '
                        f'"util_up" FROM "uplink" WHERE {SITES} AND {RECENT} '
                        'GROUP BY "tenant", "site"', table=True)],
        unit="none", w=10, h=9, sort=("loss", True),
        transformations=[exclude("Time"), merge()],
        overrides=[
            override("loss", unit="percent", thresholds=higher_is_worse(2, 5),
                     custom_cellOptions=colored_cell(), decimals=1),
            override("latency", unit="ms", thresholds=higher_is_worse(100, 150),
                     custom_cellOptions=colored_cell(), decimals=0),
            override("jitter", unit="ms", thresholds=higher_is_worse(20, 50),
                     custom_cellOptions=colored_cell(), decimals=1),
            *(override(f, unit="percent", thresholds=higher_is_worse(80, 90),
                       custom_cellOptions=colored_cell(), decimals=0)
              for f in ("util_down", "util_up"))])
    data_arriving = state_timeline(
        "Data arriving per site",
        "Self-health points of each site box per interval. Red: nothing arrived, the "
        "site is silent (the rightmost interval is still filling).",
        [Query(influxql='SELECT count("uptime_s") AS "points" FROM "agent" '
                        f'WHERE {SITES} AND $timeFilter '
                        'GROUP BY time($__interval), "tenant", "site" fill(0)',
               alias="$tag_site")],
        unit="none", w=12, h=8, interval="5m",
        thresholds_=thresholds((RED, None), (GREEN, 1)),
        mappings=value_mappings({0: ("silent", RED)}))
    last_data = table(
        "Last data per site",
        "When each site box last reported (stalest first), and its own backlog: the "
        "age of the oldest batch still in its spool. A backlog means the NOC sees that "
        "school late.",
        [Query(influxql='SELECT last("uptime_s") AS "agent_uptime", '
                        '"spool_oldest_age_s" AS "backlog" FROM "agent" '
                        f'WHERE {SITES} AND $timeFilter GROUP BY "tenant", "site"',
               table=True)],
        unit="s", w=12, h=8, sort=("Time", False), links=[SCHOOL_LINK],
        overrides=[LAST_SEEN,
                   override("backlog", thresholds=higher_is_worse(300, 900),
                            custom_cellOptions=colored_cell())])
    aps = table(
        "Access points up",
        "Per site: access points a controller has joined now, of those it listed in "
        "the time range (an AP that drops off a Cisco controller is no longer listed: "
        "it counts as known, not joined); and APs polled directly as devices.",
        [Query(influxql='SELECT sum("joined") AS "aps_up", count("status") AS "aps_known", '
                        'sum("joined") / count("status") * 100 AS "aps_up_pct" FROM '
                        '(SELECT last("status") AS "status", last("aps_joined") AS "joined" '
                        f'FROM "ap" WHERE {SITES} AND $timeFilter '
                        'GROUP BY "tenant", "site", "device", "ap") '
                        'WHERE $timeFilter GROUP BY "tenant", "site"', table=True),
         Query(influxql='SELECT sum("up") AS "aps_up", count("up") AS "aps_known", '
                        'sum("up") / count("up") * 100 AS "aps_up_pct" FROM '
                        '(SELECT last("reachable") AS "up" FROM "device" '
                        f"WHERE {SITES} AND \"role\" = 'ap' AND $timeFilter "
                        'GROUP BY "tenant", "site", "device") '
                        'WHERE $timeFilter GROUP BY "tenant", "site"', table=True)],
        unit="none", w=12, h=8, sort=("aps_up_pct", False),
        transformations=[exclude("Time"), merge()],
        overrides=[override("aps_up_pct", unit="percent", displayName="up %",
                            thresholds=lower_is_worse(70, 95),
                            custom_cellOptions=colored_cell(), decimals=0)])
    devices_down = table(
        "Devices down per site",
        "Devices whose latest poll in the time range got no answer.",
        [Query(influxql='SELECT count("r") - sum("r") AS "down", count("r") AS "devices" '
                        'FROM (SELECT last("reachable") AS "r" FROM "device" '
                        f'WHERE {SITES} AND $timeFilter GROUP BY "tenant", "site", "device") '
                        'WHERE $timeFilter GROUP BY "tenant", "site"', table=True)],
        unit="none", w=12, h=8, sort=("down", True), transformations=[exclude("Time")],
        links=[SCHOOL_LINK],
        overrides=[override("down", thresholds=higher_is_worse(1, 3),
                            custom_cellOptions=colored_cell())])
    return dashboard(
        uid="schoolnet-noc", title="schoolnet · NOC overview",
        description="Which schools are down now, which uplinks are bad, who is silent.",
        panels=[site_state, open_outages, worst_uplinks, data_arriving, last_data, aps,
                devices_down],
        variables=variables(multi=True), annotations=[OUTAGE_ANNOTATION],
        time_from="now-6h", refresh="1m")


# -- Uplink quality ---------------------------------------------------------------------

def uplink_quality() -> Json:
    """Latency, loss, jitter; throughput tests against the contract; contract vs measured."""
    def icmp(title: str, description: str, expr: str, unit: str, warn: float,
             act: float) -> Json:
        return timeseries(
            title, description,
            [Query(influxql=f'SELECT {expr} FROM "probe_icmp" WHERE {SITES} AND {EXTERNAL} '
                            'AND $timeFilter GROUP BY time($__interval), "site" fill(null)',
                   alias="$tag_site")],
            unit=unit, w=12, h=8, interval="1m", thresholds_=higher_is_worse(warn, act),
            threshold_lines=True)

    latency = icmp("Latency", "Mean round trip to the external targets (NOC, provider, "
                   "public anchors). Dashed: the outage engine's 150 ms.",
                   'mean("rtt_avg_ms") AS "rtt"', "ms", 100, 150)
    loss = icmp("Packet loss", "Share of echoes lost to the external targets. Dashed: "
                "the outage engine's 5 %.", 'mean("loss_pct") AS "loss"', "percent", 2, 5)
    jitter = icmp("Jitter", "Mean difference of consecutive round trips; video calls "
                  "suffer above ~30 ms.", 'mean("jitter_ms") AS "jitter"', "ms", 20, 50)
    p95 = icmp("Latency, 95th percentile (worst target)", "The slow tail: the 95th "
               "percentile round trip of the worst target in each interval.",
               'max("rtt_p95_ms") AS "rtt_p95"', "ms", 150, 300)
    tests = timeseries(
        "Throughput tests against the contract",
        "Each download and upload test as a share of the contracted rate. Below 50 % on "
        "consecutive tests opens an outage.",
        [Query(influxql='SELECT last("ratio_to_contract") * 100 AS "share" '
                        f'FROM "probe_throughput" WHERE {SITES} AND $timeFilter '
                        'GROUP BY time($__interval), "site", "direction" fill(none)',
               alias="$tag_site $tag_direction")],
        unit="percent", w=12, h=8, points=True, thresholds_=lower_is_worse(50, 80),
        threshold_lines=True)
    contract = table(
        "Contracted vs measured bandwidth",
        "Per site and direction over the time range (use 30 days for the council "
        "report): contract, median and 10th percentile of the tests.",
        [Query(influxql='SELECT last("contract_mbps") AS "contract", median("rate_mbps") AS '
                        '"median", percentile("rate_mbps", 10) AS "p10", '
                        'median("ratio_to_contract") * 100 AS "median_share", '
                        'count("rate_mbps") AS "tests" FROM "probe_throughput" '
                        f'WHERE {SITES} AND $timeFilter GROUP BY "tenant", "site", "direction"',
               table=True)],
        unit="Mbits", w=12, h=8, sort=("median_share", False), transformations=[exclude("Time")],
        overrides=[override("median_share", unit="percent", displayName="median % of contract",
                            thresholds=lower_is_worse(50, 80),
                            custom_cellOptions=colored_cell(), decimals=0),
                   override("tests", unit="none")])
    utilization = timeseries(
        "Uplink utilization",
        "Peak share of the contracted rate in use, per interval (from the WAN port's "
        "counters). Saturated in lesson hours for long: an outage.",
        [Query(influxql='SELECT max("util_in_pct") AS "down", max("util_out_pct") AS "up" '
                        f'FROM "uplink" WHERE {SITES} AND $timeFilter '
                        'GROUP BY time($__interval), "site" fill(null)',
               alias="$tag_site $col")],
        unit="percent", w=12, h=8, interval="1m", thresholds_=higher_is_worse(80, 90),
        threshold_lines=True)
    service_query = (
        'SELECT last("ok") AS "ok", {ms} AS "time_ms" FROM {m} '
        'WHERE {sites} AND $timeFilter GROUP BY "tenant", "site", {what}, "target"')
    services = table(
        "Service checks (latest)",
        "The services teachers notice first (school server, learning platform, MDM, "
        "Microsoft 365) and the resolvers, failing ones first.",
        [Query(influxql=service_query.format(ms='"total_ms"', m='"probe_http"', sites=SITES,
                                             what='"service"'), table=True),
         Query(influxql=service_query.format(ms='"connect_ms"', m='"probe_tcp"', sites=SITES,
                                             what='"service"'), table=True),
         Query(influxql=service_query.format(ms='"resolve_ms"', m='"probe_dns"', sites=SITES,
                                             what='"resolver"'), table=True)],
        unit="ms", w=12, h=8, sort=("ok", False), transformations=[exclude("Time"), merge()],
        overrides=[override("ok", mappings=OK_FAIL, custom_cellOptions=colored_cell())])
    response = timeseries(
        "Service response time (HTTP)",
        "Whole fetch: name lookup, connect, TLS, first response.",
        [Query(influxql='SELECT mean("total_ms") AS "total" FROM "probe_http" '
                        f'WHERE {SITES} AND $timeFilter '
                        'GROUP BY time($__interval), "site", "service" fill(null)',
               alias="$tag_site $tag_service")],
        unit="ms", w=12, h=8, interval="1m")
    return dashboard(
        uid="schoolnet-uplink", title="schoolnet · Uplink quality",
        description="Does each school get the internet it pays for?",
        panels=[latency, loss, jitter, p95, tests, contract, utilization, services,
                response],
        variables=variables(multi=True), annotations=[OUTAGE_ANNOTATION],
        time_from="now-24h", refresh="5m")


# -- WLAN -------------------------------------------------------------------------------

def wlan() -> Json:
    """Clients per AP and SSID, APs down, the busiest APs and channels."""
    # Per AP its latest state; per controller (the point without an ``ap`` tag) how
    # many APs it has joined now.
    latest = ('SELECT last("status") AS "status", last("aps_joined") AS "joined" FROM "ap" '
              f'WHERE {SITES} AND $timeFilter GROUP BY "tenant", "site", "device", "ap"')
    # One selector only: its rows keep the time of the AP's latest state (two selectors
    # in one query return the start of the range instead).
    latest_state = ('SELECT last("status") AS "status" FROM "ap" '
                    f'WHERE {SITES} AND $timeFilter GROUP BY "tenant", "site", "device", "ap"')
    clients_now = stat(
        "Clients now",
        "WLAN clients on the selected schools' access points (latest count of each AP "
        "in the last 15 minutes).",
        [Query(influxql='SELECT sum("clients") AS "clients" FROM (SELECT last("clients") AS '
                        f'"clients" FROM "ap" WHERE {SITES} AND {RECENT} '
                        f'GROUP BY "tenant", "site", "ap") WHERE {RECENT}')],
        unit="short", w=6, h=5)
    aps_down = stat(
        "Access points not joined",
        "APs a controller listed in the time range but has not joined now (down, or "
        "dropped off the controller).",
        [Query(influxql='SELECT sum("down") AS "down" FROM (SELECT count("status") - '
                        f'sum("joined") AS "down" FROM ({latest}) WHERE $timeFilter '
                        'GROUP BY "tenant", "site", "device") WHERE $timeFilter')],
        unit="none", w=6, h=5, thresholds_=higher_is_worse(1, 5))
    down_list = table(
        "Access points down",
        "APs whose latest state is not up (Aruba: down; Cisco: disassociating, "
        "downloading), and directly polled APs that stopped answering. An AP that drops "
        "off a Cisco controller is not listed any more: see 'least recently seen'.",
        [Query(influxql=f'SELECT "status" AS "status" FROM ({latest_state}) '
                        f'WHERE "status" !~ {AP_UP} AND $timeFilter '
                        'GROUP BY "tenant", "site", "device", "ap"', table=True),
         Query(influxql='SELECT "up" AS "reachable" FROM (SELECT last("reachable") AS "up" '
                        f"FROM \"device\" WHERE {SITES} AND \"role\" = 'ap' AND $timeFilter "
                        'GROUP BY "tenant", "site", "device") WHERE "up" = 0 AND $timeFilter '
                        'GROUP BY "tenant", "site", "device"', table=True)],
        unit="none", w=12, h=5, transformations=[merge()],
        overrides=[override("Time", unit="dateTimeFromNow", displayName="Since"),
                   override("reachable", mappings=UP_DOWN, custom_cellOptions=colored_cell())])
    least_seen = table(
        "Access points, least recently seen",
        "Every AP's latest report, oldest first (15 shown): one that dropped off its "
        "controller, or whose site went silent, is at the top.",
        [Query(influxql=f'SELECT "status" AS "status" FROM ({latest_state}) '
                        'WHERE $timeFilter GROUP BY "tenant", "site", "device", "ap"',
               table=True)],
        unit="none", w=12, h=8, sort=("Time", False),
        transformations=[merge(), limit(15)],
        overrides=[override("Time", unit="dateTimeFromNow", displayName="Last seen")])
    per_site = timeseries(
        "Clients per school",
        "WLAN clients summed over each school's access points.",
        [Query(influxql='SELECT sum("clients") AS "clients" FROM (SELECT mean("clients") AS '
                        f'"clients" FROM "ap" WHERE {SITES} AND $timeFilter '
                        'GROUP BY time($__interval), "site", "ap") WHERE $timeFilter '
                        'GROUP BY time($__interval), "site" fill(null)', alias="$tag_site")],
        unit="short", w=12, h=8, interval="1m")
    per_ap = timeseries(
        "Clients per access point",
        "Associated clients per AP (hover: busiest first). A class of 30 on one AP is "
        "the typical complaint.",
        [Query(influxql='SELECT mean("clients") AS "clients" FROM "ap" '
                        f'WHERE {SITES} AND $timeFilter '
                        'GROUP BY time($__interval), "site", "ap" fill(null)',
               alias="$tag_site $tag_ap")],
        unit="short", w=12, h=8, interval="1m", legend=False)
    per_ssid = timeseries(
        "Clients per SSID",
        "Associated clients per network name, summed over the APs that report it.",
        [Query(influxql='SELECT sum("clients") AS "clients" FROM (SELECT mean("clients") AS '
                        f'"clients" FROM "ssid" WHERE {SITES} AND $timeFilter '
                        'GROUP BY time($__interval), "site", "ap", "ssid") WHERE $timeFilter '
                        'GROUP BY time($__interval), "ssid" fill(null)',
               alias="$tag_ssid")],
        unit="short", w=12, h=8, interval="1m", stack=True)
    busiest_aps = table(
        "Busiest access points",
        "Most clients at once in the time range, top 10.",
        [Query(influxql='SELECT top("clients", "site", "ap", 10) AS "clients" FROM '
                        '(SELECT max("clients") AS "clients" FROM "ap" '
                        f'WHERE {SITES} AND $timeFilter GROUP BY "site", "ap") '
                        'WHERE $timeFilter', table=True)],
        unit="short", w=12, h=8, sort=("clients", True), transformations=[exclude("Time")],
        thresholds_=higher_is_worse(40, 60),
        overrides=[override("clients", custom_cellOptions=colored_cell())])
    busiest_channels = table(
        "Busiest channels",
        "Mean channel utilization per radio (airtime busy, own and foreign traffic), "
        "top 10. Above 75 % the WLAN is slow for everyone on that channel.",
        [Query(influxql='SELECT top("util", "site", "ap", "radio", 10) AS "utilization", '
                        '"channel" AS "channel" FROM (SELECT mean("channel_util_pct") AS "util", '
                        f'last("channel") AS "channel" FROM "ap_radio" WHERE {SITES} AND '
                        '$timeFilter GROUP BY "site", "ap", "radio") WHERE $timeFilter',
               table=True)],
        unit="percent", w=12, h=8, sort=("utilization", True),
        transformations=[exclude("Time")], thresholds_=higher_is_worse(50, 75), decimals=0,
        overrides=[override("utilization", custom_cellOptions=colored_cell()),
                   override("channel", unit="none", decimals=0)])
    return dashboard(
        uid="schoolnet-wlan", title="schoolnet · WLAN",
        description="Access points and clients: where the WLAN is overloaded or down.",
        panels=[clients_now, aps_down, down_list, per_site, per_ap, per_ssid, busiest_aps,
                busiest_channels, least_seen],
        variables=variables(multi=True), annotations=[OUTAGE_ANNOTATION],
        time_from="now-6h", refresh="1m")


# -- Outages ----------------------------------------------------------------------------

def outages() -> Json:
    """What happened (last night, this week): the outage history."""
    opened = f'"event" =~ /^open/ AND {SITES}'
    resolved = f'"event" =~ /^resolve/ AND "notified" = 1 AND {SITES}'
    panels = [
        stat("Outages opened", "Outages that opened (mailed or held by policy) in the "
             "time range.",
             [Query(influxql=f'SELECT count("id") AS "opened" FROM "outage" WHERE {opened} '
                             'AND $timeFilter')], unit="short"),
        stat("Open now", "Open outages that are not a consequence of another one.",
             [Query(influxql=open_outages_query('count("open") AS "open"'))],
             unit="short", thresholds_=higher_is_worse(1, 1)),
        stat("Mean time to resolve", "Of the mailed outages resolved in the time range.",
             [Query(influxql=f'SELECT mean("duration_s") AS "mttr" FROM "outage" '
                             f'WHERE {resolved} AND $timeFilter')], unit="s"),
        stat("Longest outage", "Of the mailed outages resolved in the time range.",
             [Query(influxql=f'SELECT max("duration_s") AS "longest" FROM "outage" '
                             f'WHERE {resolved} AND $timeFilter')], unit="s"),
        timeseries(
            "Outages opened, by kind",
            "Per interval; affected outages (consequences of another) included.",
            [Query(influxql='SELECT count("id") AS "opened" FROM "outage" '
                            f"WHERE (\"event\" =~ /^open/ OR \"event\" = 'affected') AND {SITES} "
                            'AND $timeFilter GROUP BY time($__interval), "kind" fill(0)',
                   alias="$tag_kind")],
            unit="short", w=24, h=7, bars=True, stack=True, interval="1h"),
        table(
            "Outage history",
            "Every outage event, newest first: open (mailed), affected (recorded below "
            "another, not mailed), update (flapping, still down), resolve. Root: the "
            "outage an affected one belongs to.",
            [Query(influxql='SELECT "id" AS "id", "event" AS "event", "open" AS "open", '
                            '"notified" AS "mailed", "root" AS "root", "affected" AS "affected", '
                            '"duration_s" AS "duration" FROM "outage" '
                            f'WHERE {SITES} AND $timeFilter '
                            'GROUP BY "tenant", "site", "kind", "entity" '
                            'ORDER BY time DESC LIMIT 500', table=True)],
            unit="none", w=24, h=14, sort=("Time", True), links=[SCHOOL_LINK],
            overrides=[override("Time", unit="dateTimeAsLocal", displayName="When"), KIND,
                       override("duration", unit="s"),
                       override("mailed", mappings=value_mappings(
                           {1: ("yes", GREEN), 0: ("recorded", GREY)})),
                       override("open", mappings=value_mappings(
                           {1: ("open", RED), 0: ("closed", GREEN)}),
                           custom_cellOptions=colored_cell("color-text"))]),
    ]
    return dashboard(
        uid="schoolnet-outages", title="schoolnet · Outages",
        description="What happened: every outage, its duration and what it affected.",
        panels=panels, variables=variables(multi=True), annotations=[OUTAGE_ANNOTATION],
        time_from="now-7d", refresh="5m")


#: File name (without .json) -> dashboard builder (School detail: dashboards/school.py).
DASHBOARDS: Final = {
    "noc-overview": noc_overview,
    "school-detail": school_detail,
    "uplink-quality": uplink_quality,
    "wlan": wlan,
    "outages": outages,
}
