"""The site agent: sources (SNMP, uplink probes) -> queue -> disk spool -> MQTT publisher."""
