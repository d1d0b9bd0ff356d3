"""Asking a server how it is: healthy (its /health answers and /v1/models lists the served model) and how
loaded (vLLM's Prometheus /metrics: requests running and waiting, requests finished)."""

from __future__ import annotations

import httpx

from distillery.llm.server_metrics import FINISHED, RUNNING, WAITING, parse_metrics

def is_healthy(root: str, model: str, timeout_s: float = 5.0) -> bool:
    """`root` is http://host:port (no /v1)."""
    try:
        if httpx.get(f"{root}/health", timeout=timeout_s).status_code != 200:
            return False
        models = httpx.get(f"{root}/v1/models", timeout=timeout_s)
        return models.status_code == 200 and any(entry.get("id") == model for entry in models.json().get("data", []))
    except (httpx.HTTPError, ValueError):
        return False


def load(root: str, timeout_s: float = 5.0) -> dict[str, float] | None:
    """Requests running and waiting and finished so far (vLLM's names); None when /metrics does not answer."""
    try:
        response = httpx.get(f"{root}/metrics", timeout=timeout_s)
        response.raise_for_status()
    except httpx.HTTPError:
        return None
    metrics = parse_metrics(response.text)
    return {"running": metrics.get(RUNNING, 0.0), "waiting": metrics.get(WAITING, 0.0),
            "finished": metrics.get(FINISHED, 0.0)}
