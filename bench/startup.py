"""Where a cold start goes: `python -m bench.startup` prints the parts, each the median of fresh processes.

The stages are timed inside one interpreter per run, in the order the server
meets them: import the mcp SDK, import aether-mcp's server on top of it, build
the server (the SDK turns each tool's signature and return type into JSON
schemas), then the same build for the hello-world server.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

PROBE = r"""
import json, time
t0 = time.perf_counter()
import mcp.server.mcpserver
t1 = time.perf_counter()
import aether_mcp.adapters.server
from aether_mcp.profile.store import ProfileStore
t2 = time.perf_counter()
aether_mcp.adapters.server.build_server(ProfileStore())
t3 = time.perf_counter()
import runpy
runpy.run_path(HELLO)
t4 = time.perf_counter()
print(json.dumps({"import mcp": t1 - t0, "import aether_mcp.adapters.server": t2 - t1, "build aether server": t3 - t2,
                  "build hello server": t4 - t3}))
"""


def main(runs: int = 10) -> int:
    hello = str(Path(__file__).with_name("hello_server.py"))
    samples: dict[str, list[float]] = {}
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", PROBE.replace("HELLO", repr(hello))], capture_output=True, text=True, check=True
        )
        for stage, seconds in json.loads(out.stdout).items():
            samples.setdefault(stage, []).append(seconds)
    for stage, values in samples.items():
        print(f"{stage:26} {statistics.median(values) * 1000:6.1f} ms (median of {runs})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
