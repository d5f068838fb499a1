"""A site agent with a fast test-only source, run as a process the fault tests can SIGKILL.

``python -m tests.fault_agent SITE_FILE SPOOL_DIR`` runs the real agent
(``agent.app.run``: spool, forwarder, resend window, self-health) with one
:class:`FastSource` instead of SNMP pollers. Each gather is one ``device`` point, so
each gather becomes exactly one batch (one seq): the database can then be checked seq
by seq, by counting points.
"""

from __future__ import annotations

import logging
import sys

from agent.app import run
from schoolnet.wire import Point


class FastSource:
    """One ``device`` point per gather: ``n`` counts gathers since the process started."""

    name = "fast"

    def __init__(self, device: str = "sw-1") -> None:
        self.device = device
        self.n = 0

    async def collect(self, now_ns: int) -> list[Point]:
        """One point, stamped with the tick time."""
        self.n += 1
        return [Point("device", {"device": self.device}, {"up": True, "n": self.n}, now_ns)]


def main(argv: list[str]) -> int:
    """Run the agent for ``argv[0]`` with its spool in ``argv[1]``."""
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(argv[0], spool_dir=argv[1], replay_rate=2000, flush_timeout_s=15,
               sources=[FastSource()])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
