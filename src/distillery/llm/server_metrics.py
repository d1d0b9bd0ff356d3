"""An OpenAI-compatible server's own load figures, from its Prometheus /metrics (vLLM's names)."""

from __future__ import annotations

import re

METRIC_LINE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{[^}]*\})?\s+(?P<value>\S+)$")
WAITING = "vllm:num_requests_waiting"
RUNNING = "vllm:num_requests_running"
FINISHED = "vllm:request_success_total"


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> metric name -> value summed over its label sets (engines, finish reasons)."""
    totals: dict[str, float] = {}
    for line in text.splitlines():
        match = METRIC_LINE.match(line.strip())
        if match and not line.startswith("#"):
            try:
                totals[match["name"]] = totals.get(match["name"], 0.0) + float(match["value"])
            except ValueError:
                continue
    return totals


def server_root(base_url: str) -> str:
    """http://host:port/v1 -> http://host:port (where /health and /metrics are)."""
    return base_url.rstrip("/").removesuffix("/v1")
