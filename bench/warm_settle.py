"""How long a warm Claude Code CLI needs after starting: `python -m bench.warm_settle`.

Starts the CLI with `--input-format stream-json`, waits 1, 2 or 4 s, then
feeds it a one-turn task and times the answer (the `result` line), against
the project's local backend. Prints the median of 5 runs for each wait.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

from aether_mcp.profile.parsing import parse_profile
from aether_mcp.testing.backend import LocalBackend
from aether_mcp.workers.claude_cli import find_cli
from aether_mcp.workers.stream import user_message

RUNS = 5
TOKEN = "sk-bench-settle"  # noqa: S105 (the local backend's throwaway)


def main() -> int:
    cli = find_cli(parse_profile("{}", "none"), os.environ).path
    with tempfile.TemporaryDirectory() as home, LocalBackend(token=TOKEN) as backend:
        env = {"PATH": os.environ["PATH"], "HOME": home, "ANTHROPIC_BASE_URL": backend.url}
        env |= {"ANTHROPIC_AUTH_TOKEN": TOKEN, "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}
        command = [cli, "-p", "--model", "kimi-k2.5", "--output-format", "stream-json", "--verbose"]
        command += ["--strict-mcp-config", "--permission-mode", "dontAsk", "--input-format", "stream-json"]
        message = user_message("say hi")
        for wait in (1.0, 2.0, 4.0):
            times = []
            for _ in range(RUNS):
                process = subprocess.Popen(
                    command,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    env=env,
                    cwd=home,
                    text=True,
                )
                assert process.stdin is not None and process.stdout is not None
                time.sleep(wait)
                began = time.perf_counter()
                process.stdin.write(message)
                process.stdin.close()
                for line in process.stdout:
                    if '"type":"result"' in line:
                        break
                times.append(time.perf_counter() - began)
                process.wait()
            print(
                f"fed {wait:.0f} s after start: answer in {statistics.median(times) * 1000:.0f} ms (median of {RUNS})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
