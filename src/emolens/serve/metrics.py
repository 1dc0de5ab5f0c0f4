"""Prometheus metrics, in a registry of each app's own (two apps in one process never clash).

With ``emolens serve --workers N`` the workers share one count: ``PROMETHEUS_MULTIPROC_DIR`` is set
before they start, every worker writes its values there, and ``/metrics`` (whichever worker
answers) adds them up with the client's multiprocess collector.
"""

from __future__ import annotations

import os

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
        # Gauge modes matter only across workers: the store's count is one number (the latest
        # reading); pending analyses add up over the live workers.
        self.feedback_stored = Gauge(
            "emolens_feedback_stored", "Feedback records in the store", registry=r, multiprocess_mode="mostrecent"
        )
        self.inference_pending = Gauge(
            "emolens_inference_pending",
            "Analyses running or waiting for a worker thread",
            registry=r,
            multiprocess_mode="livesum",
        )

    def exposition(self) -> bytes:
        """The text ``/metrics`` serves: this process's metrics, or every worker's added up."""
        from prometheus_client import generate_latest

        if not multiprocess_dir():
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        combined = CollectorRegistry()
        multiprocess.MultiProcessCollector(combined)
        return generate_latest(combined)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR")


def worker_stopped() -> None:
    """Drop this worker's live gauges from the shared count (called when its app shuts down)."""
    if multiprocess_dir():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())
