"""Write the dashboards' JSON: ``python -m dashboards.build [--check]``.

Without options it (re)writes ``dashboards/<name>.json`` from
:data:`dashboards.boards.DASHBOARDS`. ``--check`` writes nothing and exits 1 naming
every file that is missing or differs (CI, and the unit test, run this): the committed
JSON is what Grafana provisions, so it must be exactly what the generator makes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from dashboards.boards import DASHBOARDS

#: Next to the generator: the Ansible grafana role copies ``dashboards/*.json``.
JSON_DIR = Path(__file__).resolve().parent


def render(doc: dict[str, Any]) -> str:
    """The file text of one dashboard: stable key order, 2-space indent, final newline."""
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def generated() -> dict[str, str]:
    """File name -> text of every dashboard, as the generator makes them now."""
    return {f"{name}.json": render(build()) for name, build in DASHBOARDS.items()}


def stale(json_dir: Path = JSON_DIR) -> list[str]:
    """Files in ``json_dir`` that are missing, differ from the generator, or are extra."""
    want = generated()
    out = [name for name, text in want.items()
           if not (json_dir / name).exists()
           or (json_dir / name).read_text(encoding="utf-8") != text]
    out += sorted(p.name for p in json_dir.glob("*.json") if p.name not in want)
    return out


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check`` verify) the dashboard JSON; the exit code."""
    ap = argparse.ArgumentParser(prog="python -m dashboards.build", description=__doc__)
    ap.add_argument("--check", action="store_true",
                    help="only compare; exit 1 if a file is missing or differs")
    ap.add_argument("--out", type=Path, default=JSON_DIR, help="directory (default: %(default)s)")
    args = ap.parse_args(argv)
    if args.check:
        bad = stale(args.out)
        for name in bad:
            print(f"{args.out / name}: differs from the generator "
                  "(run: python -m dashboards.build)", file=sys.stderr)
        return 1 if bad else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in generated().items():
        (args.out / name).write_text(text, encoding="utf-8")
        print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
