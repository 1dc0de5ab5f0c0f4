"""Prometheus metrics, in a registry of each app's own (two apps in one process never clash).

With ``--workers N`` every process counts for itself; scrape each, or run one worker per container.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "emolens_http_requests",
            "HTTP requests by method, route and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "emolens_http_request_duration_seconds",
            "HTTP request latency by method and route",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.analyses = Counter("emolens_analyses", "Images analysed", registry=r)
        self.faces = Counter("emolens_faces", "Faces found in analysed images", registry=r)
        self.analysis_seconds = Histogram(
            "emolens_analysis_seconds",
            "Time to decode, detect and classify one image",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.feedback = Counter(
            "emolens_feedback", "Feedback records stored through the API, by kind", ["kind"], registry=r
        )
        self.feedback_stored = Gauge("emolens_feedback_stored", "Feedback records in the store", registry=r)
        self.inference_pending = Gauge(
            "emolens_inference_pending", "Analyses running or waiting for a worker thread", registry=r
        )
