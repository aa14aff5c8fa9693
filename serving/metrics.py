"""Prometheus metrics, served at TF Serving's path /monitoring/prometheus/metrics.

TF Serving's own series come first, named and labelled as its PrometheusExporter prints them
(util/prometheus_exporter.cc: "/tensorflow/serving/request_count" becomes
`:tensorflow:serving:request_count`; counters without `_total`; latency histograms in
microseconds with monitoring::Buckets::Exponential(10, 1.8, 33)), recorded where TF Serving
records them (http_server.cc, prediction_service_impl.cc, saved_model_warmup_util.cc):
- `:tensorflow:serving:request_count{model_name,status}`: every REST request and every gRPC
  Predict/Classify/Regress, by canonical status name;
- `:tensorflow:serving:request_latency{model_name,API,entrypoint}`: successful ones only, API
  "predict"/"classify"/... and entrypoint "REST", or "Predict"/"Classify" and "GRPC";
- `:tensorflow:serving:model_warmup_latency{model_path,status}`.
Then this server's own (`serving_*`: per-API REST counts, errors, batch sizes, versions).

Each app gets its own CollectorRegistry, so several apps (e.g. in one test process) never
share or clash over counters. The `model` label only takes names the server knows, so clients
asking for made-up models cannot grow the number of series.
"""

from __future__ import annotations

import bisect
import threading
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


def _tf_buckets() -> tuple[float, ...]:
    return tuple(10 * 1.8**i for i in range(33))


def _six_digits(value: float) -> str:
    """A double as absl::StrCat prints it (6 significant digits)."""
    return f"{value:.6g}"


class TfServingSeries:
    """Counters and histograms printed exactly in TF Serving's exposition format."""

    BUCKETS = _tf_buckets()

    def __init__(self):
        self._lock = threading.Lock()
        self._counters: dict[str, dict[tuple[tuple[str, str], ...], int]] = {}
        self._histograms: dict[str, dict[tuple[tuple[str, str], ...], list]] = {}

    def increment(self, name: str, **labels: str) -> None:
        key = tuple(labels.items())
        with self._lock:
            cells = self._counters.setdefault(name, {})
            cells[key] = cells.get(key, 0) + 1

    def observe(self, name: str, value: float, **labels: str) -> None:
        key = tuple(labels.items())
        with self._lock:
            cells = self._histograms.setdefault(name, {})
            cell = cells.setdefault(key, [[0] * (len(self.BUCKETS) + 1), 0.0])
            cell[0][bisect.bisect_left(self.BUCKETS, value)] += 1
            cell[1] += value

    def exposition(self) -> str:
        lines = []
        with self._lock:
            for name, cells in sorted(self._counters.items()):
                lines.append(f"# TYPE {name} counter")
                for key, value in cells.items():
                    lines.append(f"{name}{{{_labels(key)}}} {value}")
            for name, cells in sorted(self._histograms.items()):
                lines.append(f"# TYPE {name} histogram")
                for key, (counts, total) in cells.items():
                    labels = _labels(key)
                    prefix = f"{name}_bucket{{{labels}{',' if labels else ''}"
                    cumulative = 0
                    for i, count in enumerate(counts):
                        cumulative += count
                        limit = _six_digits(self.BUCKETS[i]) if i < len(self.BUCKETS) else "+Inf"
                        lines.append(f'{prefix}le="{limit}"}} {cumulative}')
                    lines.append(f"{name}_sum{{{labels}}} {_six_digits(total)}")
                    lines.append(f"{name}_count{{{labels}}} {cumulative}")
        return "\n".join(lines) + "\n" if lines else ""


def _labels(key: tuple[tuple[str, str], ...]) -> str:
    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"')

    return ",".join(f'{name}="{escape(value)}"' for name, value in key)


REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
WARMUP_LATENCY = ":tensorflow:serving:model_warmup_latency"


class Metrics:
    def __init__(self, models: ModelRegistry, path: str = PATH):
        self._models = models
        self.path = path
        self.tf_serving = TfServingSeries()
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

    def observe_tf_serving(
        self, api: str, entrypoint: str, model: str | None, code: str, seconds: float
    ) -> None:
        """TF Serving's request_count (always) and request_latency (OK only)."""
        label = self.model_label(model)
        self.tf_serving.increment(REQUEST_COUNT, model_name=label, status=code)
        if code == "OK":
            self.tf_serving.observe(
                REQUEST_LATENCY, seconds * 1e6, model_name=label, API=api, entrypoint=entrypoint
            )

    def observe_warmup(self, model_path: str, code: str, seconds: float) -> None:
        self.tf_serving.observe(WARMUP_LATENCY, seconds * 1e6, model_path=model_path, status=code)

    def observe(
        self, api: str, model: str | None, http_status: int, code: str | None, seconds: float
    ) -> None:
        if api not in ("metrics", "other"):
            self.observe_tf_serving(api, "REST", model, code or "OK", seconds)
        label = self.model_label(model)
        self.requests.labels(api, label, str(http_status)).inc()
        self.latency.labels(api, label).observe(seconds)
        if code is not None:
            self.errors.labels(api, code).inc()

    def batch_observer(self) -> Callable[[int], None]:
        return self.batch_size.observe

    def exposition(self) -> bytes:
        return self.tf_serving.exposition().encode() + generate_latest(self.registry)
