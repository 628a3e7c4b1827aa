"""Prometheus metrics of the model server, written by hand.

prometheus_client costs 2-4 us per observation (locks, label lookups) and
its exposition walks generic collectors; the server records a handful of
numbers per request on one thread, so plain counters and fixed-bucket
histograms cost well under a microsecond (``bisect`` on a tuple). The text
follows the Prometheus exposition format 0.0.4::

    m = Metrics(model="digits")
    m.request(200, 0.0004)
    m.batch(12)
    text = m.render(queue_depth=3, version=2, dropped=0, written=10)

Everything is recorded from the event-loop thread; the request-log counters
are read from its writer when rendering.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

__all__ = ["Histogram", "Metrics"]

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Histogram:
    """Cumulative-bucket histogram (``le`` upper bounds), as Prometheus wants it."""

    __slots__ = ("bounds", "counts", "total", "n")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value
        self.n += 1

    def lines(self, name: str, labels: str = "") -> list[str]:
        out = []
        running = 0
        sep = "," if labels else ""
        for bound, c in zip(self.bounds, self.counts):
            running += c
            out.append(f'{name}_bucket{{{labels}{sep}le="{_num(bound)}"}} {running}')
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.n}')
        lab = f"{{{labels}}}" if labels else ""
        out.append(f"{name}_sum{lab} {_num(self.total)}")
        out.append(f"{name}_count{lab} {self.n}")
        return out


def _num(v: float) -> str:
    return repr(float(v)) if isinstance(v, float) else str(v)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Metrics:
    """The server's counters and histograms (see the module docstring)."""

    def __init__(self, *, model: str) -> None:
        self.model = model
        self.requests: dict[int, int] = {}
        self.latency = Histogram(LATENCY_BUCKETS)
        self.batch_size = Histogram(BATCH_BUCKETS)
        self.abstentions = 0
        self.rows = 0
        self.swaps = 0

    def request(self, status: int, seconds: float | None = None) -> None:
        self.requests[status] = self.requests.get(status, 0) + 1
        if seconds is not None:
            self.latency.observe(seconds)

    def batch(self, size: int) -> None:
        self.batch_size.observe(size)
        self.rows += size

    def render(self, *, queue_depth: int, version: int | None, dropped: int, written: int, ready: bool) -> str:
        m = f'model="{_escape(self.model)}"'
        lines = [
            "# HELP loopml_requests_total Prediction and API requests answered, by HTTP status.",
            "# TYPE loopml_requests_total counter",
        ]
        for status in sorted(self.requests):
            lines.append(f'loopml_requests_total{{{m},code="{status}"}} {self.requests[status]}')
        lines += ["# HELP loopml_request_latency_seconds Time from a full request to its answer (predictions).",
                  "# TYPE loopml_request_latency_seconds histogram"]
        lines += self.latency.lines("loopml_request_latency_seconds", m)
        lines += ["# HELP loopml_batch_size Rows per forward pass.", "# TYPE loopml_batch_size histogram"]
        lines += self.batch_size.lines("loopml_batch_size", m)
        lines += [
            "# HELP loopml_queue_depth Requests waiting for a forward pass.",
            "# TYPE loopml_queue_depth gauge",
            f"loopml_queue_depth{{{m}}} {queue_depth}",
            "# HELP loopml_abstentions_total Rows the OOD gate answered with abstain.",
            "# TYPE loopml_abstentions_total counter",
            f"loopml_abstentions_total{{{m}}} {self.abstentions}",
            "# HELP loopml_rows_total Input rows predicted.",
            "# TYPE loopml_rows_total counter",
            f"loopml_rows_total{{{m}}} {self.rows}",
            "# HELP loopml_request_log_dropped_total Request log records dropped (store down or buffer full).",
            "# TYPE loopml_request_log_dropped_total counter",
            f"loopml_request_log_dropped_total{{{m}}} {dropped}",
            "# HELP loopml_request_log_written_total Request log records written to the store.",
            "# TYPE loopml_request_log_written_total counter",
            f"loopml_request_log_written_total{{{m}}} {written}",
            "# HELP loopml_model_swaps_total Hot swaps to a new version.",
            "# TYPE loopml_model_swaps_total counter",
            f"loopml_model_swaps_total{{{m}}} {self.swaps}",
            "# HELP loopml_model_version The version being served (0 before the first load).",
            "# TYPE loopml_model_version gauge",
            f"loopml_model_version{{{m}}} {version or 0}",
            "# HELP loopml_ready 1 when a model is loaded and warmed up.",
            "# TYPE loopml_ready gauge",
            f"loopml_ready{{{m}}} {1 if ready else 0}",
        ]
        return "\n".join(lines) + "\n"
