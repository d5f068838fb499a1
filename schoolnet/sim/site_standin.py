"""A stand-in for a site's agent on the MQTT side only: last will, birth, heartbeats.

For outage tests and the latency benchmark: it connects like the agent does (retained
last will ``offline``/``lost`` on the site's status topic, retained birth ``online``) and
then publishes the agent's self-health point every ``--interval`` seconds, so the site
looks alive. Killing the process (SIGKILL) is a site losing its connection: the broker
publishes the last will as soon as it notices.

    python -m schoolnet.sim.site_standin --port 1883 --tenant t --site s
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from schoolnet.wire import (
    Batch,
    Point,
    Status,
    Topic,
    encode_batch,
    encode_status,
    status_topic,
)


def run(host: str, port: int, tenant: str, site: str, interval: float, keepalive: int) -> int:
    """Connect, announce ``online``, send heartbeats until SIGTERM; the exit code."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"standin-{site}-"
                         f"{uuid.uuid4().hex[:6]}", protocol=mqtt.MQTTv311)
    will = Status(site=site, state="offline", reason="lost")
    client.will_set(status_topic(tenant, site), encode_status(will), qos=1, retain=True)
    client.connect(host, port, keepalive=keepalive)
    client.loop_start()
    online = Status(site=site, state="online", time_ns=time.time_ns(), version="standin")
    client.publish(status_topic(tenant, site), encode_status(online), qos=1,
                   retain=True).wait_for_publish(10)
    print("online", flush=True)  # the parent waits for this line
    epoch = uuid.uuid4().hex[:8]
    seq = 0
    topic = str(Topic(tenant, site, "metrics"))
    while not stop.wait(0 if seq == 0 else interval):
        point = Point("agent", {"version": "standin"}, {"queue": 0, "pid": os.getpid()},
                      time.time_ns())
        client.publish(topic, encode_batch(Batch(site=site, seq=seq, points=(point,),
                                                 epoch=epoch)), qos=1)
        seq += 1
    # A clean stop, as the agent does it: say so, then disconnect (no last will).
    client.publish(status_topic(tenant, site),
                   encode_status(Status(site=site, state="offline", reason="shutdown")),
                   qos=1, retain=True).wait_for_publish(10)
    client.disconnect()
    client.loop_stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--tenant", required=True)
    ap.add_argument("--site", required=True)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--keepalive", type=int, default=30)
    a = ap.parse_args(argv)
    return run(a.host, a.port, a.tenant, a.site, a.interval, a.keepalive)


if __name__ == "__main__":
    sys.exit(main())
