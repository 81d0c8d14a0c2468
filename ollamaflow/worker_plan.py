"""PURE: what each worker of ``ollamaflow dataplane --workers N`` is called and where its metrics are.

Worker K (0 to N-1) is a data plane of its own to the control plane, with the id ``<id>-w<K>``, so its
reports and its limit shares count like any other plane's: the shares of all live workers sum to the
backend's limit. With a metrics port P of their own (OLLAMAFLOW_DATAPLANE_METRICS_PORT), worker K
serves its metrics on P+K: the first keeps P, and each process's counters can be scraped.
"""

from __future__ import annotations

__all__ = ["metrics_ports_problem", "worker_id", "worker_ids", "worker_metrics_port"]


def worker_id(dataplane_id: str, index: int) -> str:
    """The data-plane id worker ``index`` (from 0) reports as."""
    return f"{dataplane_id}-w{index}"


def worker_ids(dataplane_id: str, workers: int) -> list[str]:
    return [worker_id(dataplane_id, index) for index in range(workers)]


def worker_metrics_port(metrics_port: int, index: int) -> int:
    """Worker ``index``'s metrics port: ``metrics_port + index``, or 0 (metrics on the data plane's own
    port, served by whichever worker accepts the connection) when ``metrics_port`` is 0."""
    return metrics_port + index if metrics_port else 0


def metrics_ports_problem(metrics_port: int, workers: int, dataplane_port: int) -> str | None:
    """Why the workers' metrics ports cannot be used (None: they can)."""
    if not metrics_port:
        return None
    last = metrics_port + workers - 1
    if last > 65535:
        return (
            f"OLLAMAFLOW_DATAPLANE_METRICS_PORT {metrics_port} leaves no room for {workers} workers "
            f"(worker K serves its metrics on that port + K; the last would be {last})"
        )
    if metrics_port <= dataplane_port <= last:
        return (
            f"the workers' metrics ports {metrics_port}-{last} (OLLAMAFLOW_DATAPLANE_METRICS_PORT + K) "
            f"include the data plane's port {dataplane_port}"
        )
    return None
