"""Grafana dashboards for the NOC, generated from data (see docs/dashboards.md).

:mod:`dashboards.boards` says what every dashboard shows (panels, InfluxQL queries,
units, thresholds); :mod:`dashboards.grafana` turns that into Grafana's JSON model;
``python -m dashboards.build`` writes ``dashboards/*.json``, the files Grafana
provisions. The JSON is committed; a unit test fails when it differs from what the
generator makes.
"""
