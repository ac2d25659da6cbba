"""A screenshot of `aether-mcp top` during a wave, taken by Textual's pilot: the picture in the README.

    python -m bench.screenshot docs/top.svg

Real parts: a stdio aether-mcp server, real Claude Code workers, the real LiteLLM proxy (from `make litellm`)
in front of the project's local backend, whose models answer after a few seconds. A scout runs first; then a
wave of a watcher, a scout and three builders, side by side (four at a time, the default); the picture is taken
while the wave is half done.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters

from aether_mcp.adapters.top.app import ColonyApp
from aether_mcp.testing.backend import LocalBackend
from aether_mcp.testing.proxy import deployments_config, running_proxy

ROOT = Path(__file__).resolve().parent.parent
LITELLM = ROOT / ".venv-litellm" / "bin" / "litellm"
KEY = "sk-screenshot-master"  # LiteLLM's master key for this picture alone
MODELS = {"kimi-k2.5": 7.0, "glm-5": 2.0, "minimax-2.5": 4.0}  # each model's time to answer, in seconds


async def take(target: Path, project: Path, env: dict[str, str]) -> None:
    server = StdioServerParameters(
        command=sys.executable, args=["-m", "aether_mcp", "serve"], cwd=str(project), env=env
    )
    app = ColonyApp(project / ".aether", project)
    async with Client(server) as client, app.run_test(size=(110, 32)) as pilot:
        await client.call_tool("spawn_worker", {"caste": "scout", "task": "Map the parser", "description": "map"})
        wave = [("watcher", "Review the plan", "review"), ("scout", "Find the tests", "tests")]
        wave += [("builder", f"Build step {n}", f"step {n}") for n in range(1, 4)]
        for caste, task, description in wave:
            arguments = {"caste": caste, "task": task, "description": description, "wait": False}
            await client.call_tool("spawn_worker", arguments)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done = [r for r in app.board.rows if r.status == "succeeded"]
            if len(done) >= 2 and sum(r.status == "running" for r in app.board.rows) >= 3:
                break
            await pilot.pause(0.1)
        await pilot.pause(0.6)
        app.save_screenshot(filename=target.name, path=str(target.parent))


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.screenshot", description=__doc__)
    parser.add_argument("target", type=Path, help="the SVG to write")
    args = parser.parse_args()
    if not LITELLM.is_file():
        print("LiteLLM is needed: make litellm")
        return 1
    folder = Path(tempfile.mkdtemp(prefix="aether-screenshot-"))
    project, home = folder / "colony", folder / "home"
    project.mkdir()
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
    os.environ.update(HOME=env["HOME"], XDG_CONFIG_HOME=env["XDG_CONFIG_HOME"])  # the trust below is this HOME's
    with LocalBackend(token=KEY, models=list(MODELS), delays=MODELS) as backend:
        config = deployments_config(dict.fromkeys(MODELS, backend.url), api_key=KEY, master_key=KEY)
        with running_proxy(str(LITELLM), folder, config) as url:
            from aether_mcp.profile.store import ProfileStore

            profile = project / "model-profiles.yaml"
            profile.write_text(
                "worker_models:\n  builder: kimi-k2.5\n  scout: glm-5\n  watcher: minimax-2.5\n"
                f"proxy:\n  endpoint: {url}\n  auth_token: {KEY}\n"
            )
            ProfileStore(profile).trust(profile)
            anyio.run(take, args.target.resolve(), project, env)
    print(f"wrote {args.target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
