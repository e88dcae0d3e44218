"""Whether the Hugging Face Hub can be reached, found out in seconds, before anything asks it.

Offline, huggingface_hub retries a request with exponential back-off: a hub id on a machine without network
took 30 to 54 s to fail, and its retries logged warnings on stderr. The command line instead tries one TCP
connection to the hub (or to the proxy that reaches it) with a short timeout before the first hub id is read.
When that fails, the process switches to the cache (`HF_HUB_OFFLINE`), as if the user had set it: a model,
tokenizer or data set in the local cache still loads, anything else fails at once with one line.
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.request
from urllib.parse import urlsplit

# Seconds to wait for the hub's TCP connection: a reachable hub answers in well under one.
CONNECT_TIMEOUT_S = 3.0
_OFFLINE_VALUES = ("1", "ON", "YES", "TRUE")
_unreachable_because: str | None = None


def offline_reason() -> str | None:
    """Why this process uses the cache only: the hub could not be reached; None when it was not switched."""
    return _unreachable_because


def _offline_by_setting() -> bool:
    import huggingface_hub.constants

    settings = (os.environ.get("HF_HUB_OFFLINE") or "", os.environ.get("TRANSFORMERS_OFFLINE") or "")
    return huggingface_hub.constants.HF_HUB_OFFLINE or any(value.upper() in _OFFLINE_VALUES for value in settings)


def _connection_target(endpoint: str) -> tuple[str, int]:
    """The host and port a request to ``endpoint`` connects to: the hub's, or its proxy's."""
    url = urlsplit(endpoint)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(url.scheme) or urllib.request.getproxies().get("all")
    if proxy and not urllib.request.proxy_bypass(host):
        proxied = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        return proxied.hostname or host, proxied.port or 8080
    return host, port


def hub_unreachable() -> str | None:
    """Why the hub cannot be reached now (``huggingface.co:443: Name or service not known``), or None."""
    import huggingface_hub.constants

    host, port = _connection_target(huggingface_hub.constants.ENDPOINT)
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            return None
    except OSError as error:
        return f"{host}:{port}: {error.strerror or error}"


def use_cache_when_hub_unreachable() -> None:
    """Switch this process to the cache (`HF_HUB_OFFLINE`) when the hub cannot be reached; once per process.

    Nothing is tried when offline mode is already set. The switch sets the environment variable and the
    values huggingface_hub and datasets read it into when they were imported.
    """
    global _unreachable_because
    if _unreachable_because is not None or _offline_by_setting():
        return
    reason = hub_unreachable()
    if reason is None:
        return
    import huggingface_hub.constants

    _unreachable_because = reason
    os.environ["HF_HUB_OFFLINE"] = "1"
    huggingface_hub.constants.HF_HUB_OFFLINE = True
    datasets_config = sys.modules.get("datasets.config")
    if datasets_config is not None:
        datasets_config.HF_HUB_OFFLINE = datasets_config.HF_DATASETS_OFFLINE = True
