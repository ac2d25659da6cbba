"""`aether-mcp top` in a real terminal (tmux, 100x30): its first frame, and what it costs while nothing changes.

    python -m bench.top              # 200 finished workers in the log and 16 running, three launches
    python -m bench.top --quick      # one launch: a smoke test

The project is seeded with what servers write: 200 spawn-log lines and 16 running notes whose server is a live
process (a `sleep` standing for it), so no worker has to run. The first frame is the time from launching `top`
until tmux shows its summary line with the right counts; its baseline, in the same run, is `aether-mcp
workers` printing the same project once. The idle cost is `top`'s CPU time (user and system, from /proc) over
10 s with nothing changing but the running workers' clocks; its baseline is the same `top` on an empty project.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aether_mcp import procs

from .run import Row, markdown

IDLE_S = 10.0
SIZE = ("100", "30")
TMUX = ["tmux", "-L", f"aether-bench-top-{os.getpid()}"]  # a server of its own, not the user's
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def seed(project: Path, finished: int, running: int, server: str) -> None:
    """What servers would have written after `finished` workers, with `running` more under way."""
    state = project / ".aether"
    (state / "running").mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    castes = [("builder", "kimi-k2.5"), ("scout", "glm-5"), ("watcher", "minimax-2.5")]
    lines = []
    for n in range(finished):
        caste, model = castes[n % 3]
        began = now - timedelta(seconds=10 * (finished - n) + 30)
        lines.append(entry(f"{caste}-{n:08x}", caste, model, began=began, ended=began + timedelta(seconds=8)))
    (state / "spawn-log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    for n in range(running):
        caste, model = castes[n % 3]
        note = {**entry(f"{caste}-r{n:07x}", caste, model, began=now - timedelta(seconds=n), ended=None)}
        (state / "running" / f"{note['worker_id']}.json").write_text(json.dumps({**note, "server": server}))


def entry(worker_id: str, caste: str, model: str, *, began: datetime, ended: datetime | None) -> dict[str, Any]:
    status = "succeeded" if ended else "running"
    return {
        "worker_id": worker_id,
        "caste": caste,
        "description": "map the parser",
        "model": model,
        "model_source": "profile",
        "status": status,
        "routing_verified": status == "succeeded",
        "served_by": [f"deployment deployment-{model} (anthropic/{model} at http://127.0.0.1:4000)"],
        "requests": 3,
        "tokens": {"input": 1200, "output": 300, "cache_read": 0, "cache_write": 0},
        "cost_usd": 0.0021 if ended else None,
        "started_at": began.isoformat(timespec="seconds"),
        "finished_at": ended.isoformat(timespec="seconds") if ended else None,
        "duration_s": (ended - began).total_seconds() if ended else None,
        "cwd": str(Path.cwd()),
    }


def aether() -> str:
    return str(Path(sys.executable).parent / "aether-mcp")


def first_frame(project: Path, expect: str) -> tuple[float, int]:
    """Seconds from launching top in tmux until `expect` shows; and top's pid, left running."""
    subprocess.run([*TMUX, "kill-session", "-t", "benchtop"], capture_output=True, check=False)
    began = time.perf_counter()
    window = ["-x", SIZE[0], "-y", SIZE[1], "-c", str(project)]
    subprocess.run(
        [*TMUX, "new-session", "-d", "-s", "benchtop", *window, "env", "-u", "COLUMNS", "-u", "LINES", aether(), "top"],
        check=True,
    )
    while time.perf_counter() - began < 30:
        shown = subprocess.run(
            [*TMUX, "capture-pane", "-p", "-t", "benchtop"], capture_output=True, text=True, check=False
        )
        if expect in shown.stdout:
            took = time.perf_counter() - began
            pid = subprocess.run(
                [*TMUX, "display-message", "-p", "-t", "benchtop", "#{pane_pid}"],
                capture_output=True,
                text=True,
                check=True,
            )
            return took, int(pid.stdout.strip())
        time.sleep(0.01)
    raise RuntimeError(f"top never showed {expect!r}")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def idle_share(pid: int) -> float:
    """top's share of one core over IDLE_S, once it has settled."""
    time.sleep(2)
    before, began = cpu_s(pid), time.perf_counter()
    time.sleep(IDLE_S)
    return (cpu_s(pid) - before) / (time.perf_counter() - began)


def listing_s(project: Path) -> float:
    began = time.perf_counter()
    subprocess.run([aether(), "workers"], cwd=project, capture_output=True, check=True)
    return time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.top", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one launch: a smoke test")
    args = parser.parse_args()
    if shutil.which("tmux") is None:
        print("tmux is needed: apt-get install tmux")
        return 1
    runs = 1 if args.quick else 3
    folder = Path(tempfile.mkdtemp(prefix="aether-bench-top-"))
    server = subprocess.Popen(["sleep", "600"])
    frames, lists, idles, empties = [], [], [], []
    try:
        busy, empty = folder / "busy", folder / "empty"
        empty.mkdir()
        busy.mkdir()
        seed(busy, 200, 16, procs.identity(server.pid))
        for _ in range(runs):
            lists.append(listing_s(busy))
            took, pid = first_frame(busy, "200 finished")
            frames.append(took)
            idles.append(idle_share(pid))
            _, pid = first_frame(empty, "No workers yet")
            empties.append(idle_share(pid))
    finally:
        subprocess.run([*TMUX, "kill-session", "-t", "benchtop"], capture_output=True, check=False)
        server.kill()
        shutil.rmtree(folder, ignore_errors=True)
    frame, listing = statistics.median(frames), statistics.median(lists)
    idle, idle_empty = statistics.median(idles), statistics.median(empties)
    rows = [
        Row(
            "top: first frame (200 finished, 16 running; tmux 100x30)",
            f"`aether-mcp workers` once: {listing * 1000:.0f} ms",
            f"{frame * 1000:.0f} ms",
            frame / listing,
            "under 1 s",
            frame < 1.0,
            f"runs: {', '.join(f'{f * 1000:.0f}' for f in frames)} ms",
        ),
        Row(
            "top: CPU while nothing changes (200 finished, 16 running)",
            f"top on an empty project: {idle_empty:.1%} of a core",
            f"{idle:.1%} of a core",
            idle / idle_empty if idle_empty else None,
            "under 5% of one core",
            idle < 0.05,
            f"{IDLE_S:.0f} s each; runs: {', '.join(f'{i:.1%}' for i in idles)}",
        ),
    ]
    print(markdown(rows, sum(frames) + runs * 2 * (IDLE_S + 2), "python -m bench.top" + (" --quick" * args.quick)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
