"""``schoolnet uplink report``: does each school get the internet it pays for?

Per site of a tenant: the contracted rates next to what the probes measured over the
last N days (median and 10th percentile of the throughput tests, down and up), ICMP
loss and latency, and peak utilization — the table a school authority puts in front of
its council and its provider, as text or CSV (docs/probes.md).

- :mod:`schoolnet.uplink.query`: the query layer, one small class per database API
  (Prometheus-style ``/api/v1/query`` — VictoriaMetrics in the demo —, InfluxQL
  ``/query`` — InfluxDB 1.x); each answers the same few questions.
- :mod:`schoolnet.uplink.report`: rows from the inventory and the answers, text and
  CSV (pure), and ``run()``.
- :mod:`schoolnet.uplink.cli`: the click command.
"""
