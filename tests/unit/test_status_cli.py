"""schoolnet status: the table from /api/status, JSON, and a collector that is away."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from click.testing import CliRunner

from collector.statuscli import render, status_command

NOW = 1_800_000_000.0
DOC = {
    "collector": {"mqtt_connected": True, "mqtt_error": "", "writes_failing": False,
                  "buffer_lines": 12, "settling_lines": 3, "database_restarts": 1,
                  "spool": {"bytes": 2 * 1024**2, "max_bytes": 8 * 1024**3, "lost_lines": 0}},
    "sites": [
        {"tenant": "herne", "site": "gy-a", "state": "online", "last_seen_ns": int((NOW - 5) * 1e9),
         "messages": 120, "points": 5000, "dropped": 2, "seq_highest": 119, "seq_gaps": 0,
         "seq_duplicates": 4},
        {"tenant": "bochum", "site": "rs-c", "state": "unknown", "last_seen_ns": None,
         "messages": 0, "points": 0, "dropped": 0, "seq_highest": -1, "seq_gaps": 7,
         "seq_duplicates": 0},
    ],
}


def test_render_shows_the_collector_and_every_sites_seq_bookkeeping() -> None:
    text = render(DOC, now=NOW)
    lines = text.splitlines()
    assert lines[0] == ("collector: mqtt connected, writes ok, 12 line(s) to write, 3 written, "
                        "not yet durable, spool 2.0 MiB of 8.0 GiB, 1 database restart(s) seen")
    assert lines[2].split() == ["TENANT", "SITE", "STATE", "LAST", "SEEN", "MESSAGES", "POINTS",
                                "DROPPED", "SEQ", "GAPS", "DUPLICATES"]
    assert lines[3].split() == ["herne", "gy-a", "online", "5s", "ago", "120", "5000", "2",
                                "119", "0", "4"]
    assert lines[4].split()[:4] == ["bochum", "rs-c", "unknown", "never"]
    assert lines[-1] == "2 site(s); 7 seq(s) missing (data not arrived or lost); 4 duplicate(s) skipped"
    assert "rs-c" not in render(DOC, now=NOW, tenant="herne")


@pytest.fixture()
def server() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(DOC).encode()
            self.send_response(200 if self.path == "/api/status" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_the_command_reads_the_collector_over_http(server: str) -> None:
    result = CliRunner().invoke(status_command, ["--collector", server])
    assert result.exit_code == 0 and "gy-a" in result.output and "GAPS" in result.output
    as_json = CliRunner().invoke(status_command, ["--collector", server, "--json"])
    assert json.loads(as_json.output)["sites"][1]["seq_gaps"] == 7


def test_a_collector_that_does_not_answer_is_exit_1() -> None:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nobody listens here once closed
    result = CliRunner().invoke(status_command, ["--collector", f"http://127.0.0.1:{port}"])
    assert result.exit_code == 1 and "schoolnet status:" in result.output
