"""The *School detail* dashboard: one school's devices, ports, PoE, temperatures, its
LLDP topology and its uplink against the contract.

Its own module (the other four boards are in :mod:`dashboards.boards`), so each file
stays readable. Measurements and fields are those of docs/data-model.md.
"""

from __future__ import annotations

from dashboards.conventions import (
    KIND,
    OUTAGE_ANNOTATION,
    POE_BUDGET,
    SITES,
    UP_DOWN,
    variables,
)
from dashboards.grafana import (
    GREEN,
    GREY,
    ORANGE,
    Json,
    Query,
    bargauge,
    colored_cell,
    dashboard,
    exclude,
    gauge_cell,
    higher_is_worse,
    override,
    stat,
    state_timeline,
    table,
    timeseries,
    value_mappings,
)

#: The series of one LLDP link (docs/data-model.md, ``topology``).
LINK_TAGS = '"device", "ifname", "neighbour", "neighbour_port"'


def topology_panel() -> Json:
    """The site's LLDP links (``topology``): which port feeds which switch or AP."""
    # The latest point of each link in the time range; links whose latest point says
    # they disappeared (present = 0) are left out.
    return table(
        "Topology (LLDP)",
        "Which port of which device feeds which switch, access point or other system, "
        "from the devices' LLDP tables (the tree of `schoolnet topology`). Hops: from the "
        "uplink device. Not in inventory: a phone, PC or unmanaged device, or a device "
        "missing from the site config. Parent link: the link the tree hangs on (the "
        "other links are cross or second links). Written on change and every 15 min.",
        [Query(influxql='SELECT "known" AS "known", "depth" AS "depth", '
                        '"parent_link" AS "parent_link" FROM (SELECT last("present") AS '
                        '"present", "known", "depth", "parent_link" FROM "topology" '
                        f'WHERE {SITES} AND $timeFilter GROUP BY {LINK_TAGS}) '
                        f'WHERE "present" = 1 AND $timeFilter GROUP BY {LINK_TAGS}',
               table=True)],
        unit="none", w=24, h=9, sort=("depth", False),
        overrides=[
            override("Time", unit="dateTimeFromNow", displayName="Last written"),
            override("device", displayName="Device"),
            override("ifname", displayName="Port"),
            override("neighbour", displayName="→ Neighbour"),
            override("neighbour_port", displayName="Neighbour port"),
            override("known", displayName="Inventory", custom_cellOptions=colored_cell(),
                     mappings=value_mappings({1: ("in inventory", GREEN),
                                              0: ("not in inventory", ORANGE)})),
            override("depth", displayName="Hops", decimals=0,
                     mappings=value_mappings({}, null=("not linked to the uplink", GREY))),
            override("parent_link", displayName="Parent link",
                     mappings=value_mappings({1: ("yes", GREEN), 0: ("no", GREY)}))])


def school_detail() -> Json:
    """One school: devices, ports, PoE and temperatures, the uplink against its contract."""
    devices = table(
        "Devices",
        "Every polled device: its latest poll, round trip of the whole poll, uptime.",
        [Query(influxql='SELECT last("reachable") AS "reachable", "poll_ms" AS "poll_ms", '
                        '"uptime_s" AS "uptime" FROM "device" '
                        f'WHERE {SITES} AND $timeFilter GROUP BY "device", "role", "vendor"',
               table=True)],
        unit="none", w=14, h=9, sort=("reachable", False),
        overrides=[override("Time", unit="dateTimeFromNow", displayName="Last poll"),
                   override("reachable", mappings=UP_DOWN, custom_cellOptions=colored_cell()),
                   override("poll_ms", unit="ms", thresholds=higher_is_worse(2000, 10000),
                            custom_cellOptions=colored_cell("color-text"), decimals=0),
                   override("uptime", unit="s")])
    reachability = state_timeline(
        "Device reachability",
        "Each device's polls over time: UP answered, DOWN no answer, grey: no poll.",
        [Query(influxql='SELECT last("reachable") AS "reachable" FROM "device" '
                        f'WHERE {SITES} AND $timeFilter '
                        'GROUP BY time($__interval), "device" fill(null)',
               alias="$tag_device")],
        unit="none", w=10, h=9, interval="1m", mappings=UP_DOWN)
    traffic = timeseries(
        "Uplink traffic against the contract",
        "Download and upload of the WAN port (from its SNMP counters) with the contracted "
        "rates as dashed lines.",
        [Query(influxql='SELECT mean("in_mbps") AS "download", mean("out_mbps") AS "upload", '
                        'last("contract_down_mbps") AS "contract_down", '
                        'last("contract_up_mbps") AS "contract_up" FROM "uplink" '
                        f'WHERE {SITES} AND $timeFilter GROUP BY time($__interval) fill(null)',
               alias="$col")],
        unit="Mbits", w=18, h=8, interval="1m",
        overrides=[override(c, custom_lineStyle={"fill": "dash", "dash": [10, 10]},
                            color={"mode": "fixed", "fixedColor": GREY},
                            custom_fillOpacity=0)
                   for c in ("contract_down", "contract_up")])
    utilization = stat(
        "Uplink utilization now",
        "Share of the contracted rate in use (latest poll).",
        [Query(influxql='SELECT last("util_in_pct") AS "download", '
                        '"util_out_pct" AS "upload" FROM "uplink" '
                        f'WHERE {SITES} AND $timeFilter', alias="$col")],
        unit="percent", w=6, h=8, thresholds_=higher_is_worse(80, 90), decimals=0,
        text_mode="value_and_name")
    top_ports = table(
        "Busiest ports",
        "Mean traffic (in + out) over the time range, top 10.",
        [Query(influxql='SELECT top("bps", "device", "ifname", 10) AS "traffic" '
                        'FROM (SELECT mean("in_bps") + mean("out_bps") AS "bps" '
                        f'FROM "interface" WHERE {SITES} AND $timeFilter '
                        'GROUP BY "device", "ifname") WHERE $timeFilter', table=True)],
        unit="bps", w=12, h=9, sort=("traffic", True), transformations=[exclude("Time")],
        overrides=[override("traffic", custom_cellOptions=gauge_cell())])
    error_ports = table(
        "Ports with errors",
        "Mean errors per second (in + out) over the time range, top 10. Cabling, duplex "
        "mismatch or a dying transceiver.",
        [Query(influxql='SELECT top("eps", "device", "ifname", 10) AS "errors" '
                        'FROM (SELECT mean("in_errors_ps") + mean("out_errors_ps") AS "eps" '
                        f'FROM "interface" WHERE {SITES} AND $timeFilter '
                        'GROUP BY "device", "ifname") WHERE $timeFilter', table=True)],
        unit="pps", w=12, h=9, sort=("errors", True), transformations=[exclude("Time")],
        thresholds_=higher_is_worse(0.01, 1), decimals=3,
        overrides=[override("errors", custom_cellOptions=colored_cell())])
    poe_budget = bargauge(
        "PoE budget used",
        "Power drawn of each switch's PoE budget (per power source). Access points go "
        "dark when it runs out.",
        [Query(influxql='SELECT last("consumption_w") / last("power_w") * 100 AS "used" '
                        f"FROM \"poe\" WHERE {SITES} AND {POE_BUDGET} AND $timeFilter "
                        'GROUP BY "device", "pse"', alias="$tag_device PSE $tag_pse")],
        unit="percent", w=8, h=8, min_=0, max_=100, thresholds_=higher_is_worse(80, 90))
    poe_power = timeseries(
        "PoE power drawn",
        "Watts drawn from each switch's PoE budget.",
        [Query(influxql='SELECT mean("consumption_w") AS "drawn" FROM "poe" '
                        f"WHERE {SITES} AND {POE_BUDGET} AND $timeFilter "
                        'GROUP BY time($__interval), "device", "pse" fill(null)',
               alias="$tag_device PSE $tag_pse")],
        unit="watt", w=8, h=8, interval="1m")
    temperatures = timeseries(
        "Temperatures",
        "Device temperature sensors. Dashed: 60 °C watch, 75 °C act (a closet without "
        "ventilation).",
        [Query(influxql='SELECT mean("value") AS "temperature" FROM "sensor" '
                        f"WHERE {SITES} AND \"sensor_type\" = 'celsius' AND $timeFilter "
                        'GROUP BY time($__interval), "device", "sensor" fill(null)',
               alias="$tag_device $tag_sensor")],
        unit="celsius", w=8, h=8, interval="1m", thresholds_=higher_is_worse(60, 75),
        threshold_lines=True)
    outages = table(
        "Outages at this school",
        "Every outage event in the time range, newest first.",
        [Query(influxql='SELECT "id" AS "id", "event" AS "event", "affected" AS "affected", '
                        '"duration_s" AS "duration" FROM "outage" '
                        f'WHERE {SITES} AND $timeFilter GROUP BY "kind", "entity" '
                        'ORDER BY time DESC LIMIT 200', table=True)],
        unit="none", w=24, h=7, sort=("Time", True),
        overrides=[override("Time", unit="dateTimeAsLocal", displayName="When"), KIND,
                   override("duration", unit="s")])
    return dashboard(
        uid="schoolnet-school", title="schoolnet · School detail",
        description="One school: devices and their state, ports, PoE, temperatures, "
                    "LLDP topology, the uplink against its contract.",
        panels=[devices, reachability, traffic, utilization, top_ports, error_ports,
                poe_budget, poe_power, temperatures, topology_panel(), outages],
        variables=variables(multi=False), annotations=[OUTAGE_ANNOTATION],
        time_from="now-6h", refresh="1m")
