"""Where benchmark scripts write their JSON: benchmarks/results/<name>.json, with the command that made it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def write_results(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.json"
    command = " ".join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]])
    out.write_text(json.dumps({"command": command, **payload}, indent=2) + "\n")
    print(f"\nwrote {out}")
    return out
