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
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters

from aether_mcp.adapters.top.app import ColonyApp
from aether_mcp.testing.backend import LocalBackend

ROOT = Path(__file__).resolve().parent.parent
LITELLM = ROOT / ".venv-litellm" / "bin" / "litellm"
KEY = "sk-screenshot-master"  # LiteLLM's master key for this picture alone
MODELS = {"kimi-k2.5": 7.0, "glm-5": 2.0, "minimax-2.5": 4.0}  # each model's time to answer, in seconds


def start_litellm(folder: Path, backend: LocalBackend) -> tuple[subprocess.Popen[bytes], str]:
    routes = "".join(
        f"  - model_name: {name}\n"
        f"    litellm_params: {{model: anthropic/{name}, api_base: '{backend.url}', api_key: {KEY}}}\n"
        f"    model_info: {{id: deployment-{name}}}\n"
        for name in MODELS
    )
    (folder / "litellm.yaml").write_text(f"model_list:\n{routes}general_settings:\n  master_key: {KEY}\n")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    command = [str(LITELLM), "--config", str(folder / "litellm.yaml"), "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health/liveliness", timeout=2):  # noqa: S310 (http, loopback)
                return process, url
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError("LiteLLM did not start")


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
        litellm, url = start_litellm(folder, backend)
        try:
            from aether_mcp.profile.store import ProfileStore

            profile = project / "model-profiles.yaml"
            profile.write_text(
                "worker_models:\n  builder: kimi-k2.5\n  scout: glm-5\n  watcher: minimax-2.5\n"
                f"proxy:\n  endpoint: {url}\n  auth_token: {KEY}\n"
            )
            ProfileStore(profile).trust(profile)
            anyio.run(take, args.target.resolve(), project, env)
        finally:
            os.killpg(litellm.pid, 9)
            litellm.wait()
    print(f"wrote {args.target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
