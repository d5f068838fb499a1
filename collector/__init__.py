"""The central collector: MQTT subscriber -> validation -> InfluxDB writer, outage engine."""
