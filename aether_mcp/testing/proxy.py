"""The real LiteLLM proxy on loopback, as the tests and the README's picture run it: its config made from
deployments of the local backend, started, waited for, and stopped with everything it started.

LiteLLM itself is not a dependency: `make litellm` installs it in an environment of its own, whose binary the
caller names.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

START_S = 120.0  # LiteLLM's proxy takes several seconds to import and start
STOP_S = 20.0


def free_port() -> int:
    """A port free on 127.0.0.1 now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def deployments_config(
    deployments: Mapping[str, str],
    api_key: str,
    master_key: str,
    router: str = "",
    calls: Mapping[str, str] | None = None,
) -> str:
    """A LiteLLM config routing each model name to the Anthropic-compatible address given for it, as the
    deployment `deployment-<name>` (calling the model of the same name there, or the one `calls` gives);
    `router` is a `router_settings` section, whole."""
    upstream = dict(calls or {})
    routes = "".join(
        f"  - model_name: {name}\n"
        f"    litellm_params: {{model: anthropic/{upstream.get(name, name)}, api_base: '{address}', "
        f"api_key: {api_key}}}\n"
        f"    model_info: {{id: deployment-{name}}}\n"
        for name, address in deployments.items()
    )
    return f"model_list:\n{routes}{router}general_settings:\n  master_key: {master_key}\n"


@contextmanager
def running_proxy(binary: str, folder: Path, config: str) -> Iterator[str]:
    """LiteLLM on a free loopback port with `config`, its files and log in `folder`; yields its URL."""
    (folder / "config.yaml").write_text(config)
    port = free_port()
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HOME": str(folder)}
    command = [binary, "--config", str(folder / "config.yaml"), "--host", "127.0.0.1", "--port", str(port)]
    with (folder / "litellm.log").open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_until_live(process, url, folder / "litellm.log")
            yield url
        finally:
            os.killpg(process.pid, 15)
            try:
                process.wait(STOP_S)
            except subprocess.TimeoutExpired:  # still waiting on a request a cancelled worker left at the backend
                os.killpg(process.pid, 9)
                process.wait(STOP_S)


def _wait_until_live(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + START_S
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health/liveliness", timeout=2):  # noqa: S310 (http, loopback)
                return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"LiteLLM did not start; see {log}") from None
            time.sleep(0.5)
