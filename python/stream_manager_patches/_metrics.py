"""Metrics: the native counters and histograms, as a summary dict, as Prometheus text,
and as a ``prometheus_client`` collector."""

from __future__ import annotations

from typing import Any, Dict, Iterator, Optional

from . import _native


def performance_summary() -> Dict[str, Any]:
    """Counters and latency figures (seconds as floats) since start or ``reset_metrics()``.

    Keys include ``avg_command_time``, ``p95_command_time``, ``p99_command_time``,
    ``success_rate``, ``total_timeouts``, ``active_pipelines``, ``failures_by_type``,
    health-check figures and ``effective_timeouts`` (what the adaptive policy applies).
    """
    return _native.performance_summary()


def reset_metrics() -> None:
    """Zero every counter and histogram and forget the adaptive-timeout history."""
    _native.reset_metrics()


def render_prometheus() -> str:
    """Prometheus text exposition (format 0.0.4) of every metric."""
    return _native.render_prometheus()


class StreamManagerCollector:
    """A ``prometheus_client`` collector exposing the same numbers as ``render_prometheus()``."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client.parser import text_string_to_metric_families

        yield from text_string_to_metric_families(render_prometheus())

    def describe(self) -> Iterator[Any]:
        # Names are stable; describing by collecting lets the registry detect clashes.
        return self.collect()


def register_prometheus(registry: Optional[Any] = None) -> StreamManagerCollector:
    """Register a collector on ``registry`` (default: ``prometheus_client.REGISTRY``), so
    the stream manager's metrics appear on an existing ``/metrics``. Needs
    ``prometheus_client``; raises ``ImportError`` with an install hint otherwise."""
    try:
        import prometheus_client
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "register_prometheus() needs prometheus_client: pip install prometheus-client"
        ) from error
    collector = StreamManagerCollector()
    (registry if registry is not None else prometheus_client.REGISTRY).register(collector)
    return collector
