"""Names and metrics ports of ``ollamaflow dataplane --workers N``, and the setting that asks for them."""

from __future__ import annotations

import pytest

from dataplane.settings import MAX_WORKERS, load_settings
from ollamaflow.worker_plan import metrics_ports_problem, worker_id, worker_ids, worker_metrics_port
from shared.errors import ConfigError


def test_each_worker_reports_as_a_data_plane_of_its_own() -> None:
    assert worker_id("edge-1", 0) == "edge-1-w0"
    assert worker_ids("edge-1", 3) == ["edge-1-w0", "edge-1-w1", "edge-1-w2"]
    assert len(set(worker_ids("dp", MAX_WORKERS))) == MAX_WORKERS


def test_worker_k_serves_its_metrics_on_the_metrics_port_plus_k() -> None:
    assert [worker_metrics_port(9100, k) for k in range(3)] == [9100, 9101, 9102]
    # 0: metrics on the data plane's own port, whichever worker answers
    assert [worker_metrics_port(0, k) for k in range(3)] == [0, 0, 0]


def test_metrics_ports_must_fit_and_miss_the_data_planes_port() -> None:
    assert metrics_ports_problem(0, 8, 43411) is None
    assert metrics_ports_problem(9100, 4, 43411) is None
    assert metrics_ports_problem(9100, 4, 9104) is None
    assert metrics_ports_problem(65534, 2, 43411) is None
    too_high = metrics_ports_problem(65535, 2, 43411)
    assert too_high is not None and "65536" in too_high
    clash = metrics_ports_problem(9100, 4, 9103)
    assert clash is not None and "9100-9103" in clash and "9103" in clash


def test_workers_setting_from_the_environment_and_the_option() -> None:
    assert load_settings(environ={}).dataplane_workers == 1
    assert load_settings(environ={"OLLAMAFLOW_DATAPLANE_WORKERS": "4"}).dataplane_workers == 4
    env = {"OLLAMAFLOW_DATAPLANE_WORKERS": "4"}
    assert load_settings(environ=env, dataplane_workers=2).dataplane_workers == 2


@pytest.mark.parametrize("value", ["0", "-1", str(MAX_WORKERS + 1), "two"])
def test_bad_worker_counts_name_the_setting(value: str) -> None:
    with pytest.raises(ConfigError, match="dataplane_workers"):
        load_settings(environ={"OLLAMAFLOW_DATAPLANE_WORKERS": value})
