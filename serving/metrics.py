"""Prometheus metrics, served at TF Serving's path /monitoring/prometheus/metrics.

Each app gets its own CollectorRegistry, so several apps (e.g. in one test process) never
share or clash over counters. The `model` label only takes names the server knows, so clients
asking for made-up models cannot grow the number of series.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from serving.models import ModelRegistry

PATH = "/monitoring/prometheus/metrics"
CONTENT_TYPE = CONTENT_TYPE_LATEST
UNKNOWN_MODEL = "_unknown"

# Latency of an image model call on CPU spans milliseconds (status) to seconds (large batches).
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class _ModelStateCollector:
    """serving_model_versions{model,state}: how many versions are in each state, read live."""

    def __init__(self, models: ModelRegistry):
        self._models = models

    def collect(self):
        family = GaugeMetricFamily(
            "serving_model_versions", "Model versions by state", labels=["model", "state"]
        )
        for name in self._models.known_models():
            counts: dict[str, int] = {}
            try:
                statuses = self._models.status(name)
            except Exception:  # no versions yet
                statuses = []
            for status in statuses:
                counts[status.state.value] = counts.get(status.state.value, 0) + 1
            for state, count in sorted(counts.items()):
                family.add_metric([name, state], count)
        yield family


class Metrics:
    def __init__(self, models: ModelRegistry):
        self._models = models
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "serving_rest_requests",
            "REST requests by API, model and HTTP status",
            ["api", "model", "http_status"],
            registry=self.registry,
        )
        self.errors = Counter(
            "serving_rest_errors",
            "Failed REST requests by API and canonical error code",
            ["api", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "serving_rest_request_latency_seconds",
            "Time from request start to response body, by API and model",
            ["api", "model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "serving_batch_size",
            "Instances per model call (after batching, if enabled)",
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_ModelStateCollector(models))

    def model_label(self, name: str | None) -> str:
        return name if name and name in self._models.known_models() else UNKNOWN_MODEL

    def observe(
        self, api: str, model: str | None, http_status: int, code: str | None, seconds: float
    ) -> None:
        label = self.model_label(model)
        self.requests.labels(api, label, str(http_status)).inc()
        self.latency.labels(api, label).observe(seconds)
        if code is not None:
            self.errors.labels(api, code).inc()

    def batch_observer(self) -> Callable[[int], None]:
        return self.batch_size.observe

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
