"""The secrets a worker could repeat, and taking them out of what it says before anything keeps it."""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping

from ..profile.worker_settings import WorkerSettings

REDACTED = "[redacted]"
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASS|AUTH|CREDENTIAL|COOKIE|SESSION", re.IGNORECASE)
# The server's own credentials: a worker never gets them, but a tool could still find and print them.
SERVER_SECRETS = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")
# Secrets this long are also redacted in base64 (shorter ones would match by chance). Not caught: base64 split
# across lines (`base64` wraps at 76 columns), hex, or any other encoding (see docs/security.md).
MIN_ENCODED = 12
_URL_SAFE = str.maketrans("+/", "-_")


def worker_secrets(settings: WorkerSettings, environ: Mapping[str, str]) -> list[str]:
    """Every secret a worker's output could repeat: its token, its MCP servers' env values, the server's keys."""
    values = [settings.auth_token.get_secret_value()] if settings.auth_token else []
    for server in settings.mcp_servers.values():
        env = server.get("env")
        if isinstance(env, dict):  # the values of keys named like secrets, not `DEBUG: "true"`
            values += [str(v) for k, v in env.items() if SECRET_NAME.search(str(k))]
    values += [environ[k] for k in SERVER_SECRETS if environ.get(k)]
    values += [form for value in values if len(value) >= MIN_ENCODED for form in base64_forms(value)]
    # Longest first, so a secret that contains another is removed whole.
    return sorted({v for v in values if len(v) >= 4}, key=len, reverse=True)


def base64_forms(secret: str) -> list[str]:
    """What `secret` looks like inside base64 (standard and URL-safe) of any text that holds it, at each of
    the three places it can start within base64's 3-byte groups: the characters made of its bits alone."""
    data = secret.encode()
    forms = []
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + data).decode("ascii")
        start, end = -(-8 * shift // 6), 8 * (shift + len(data)) // 6  # characters wholly of the secret's bits
        forms += [encoded[start:end], encoded[start:end].translate(_URL_SAFE)]
    return forms


def redact(text: str | None, secrets: list[str]) -> str | None:
    if text is None:
        return None
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text


def redact_bytes(line: bytes, secrets: list[str]) -> bytes:
    """One line of a transcript, as it is written: a secret never reaches the disk."""
    for secret in secrets:
        line = line.replace(secret.encode(), REDACTED.encode())
    return line
