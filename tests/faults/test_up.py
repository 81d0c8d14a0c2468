"""The fault matrix against ``ollamaflow up --demo --dataplanes 2`` as users run it: a child of ``up``
is killed with SIGKILL under steady client load, and ``up`` starts it again by itself.

One cluster serves the module, in file order. Recovery is counted from the kill, since the restart is
``up``'s own doing (a part after 0.5 s, a demo simulator after 5 s).
"""

from __future__ import annotations

import time

import pytest

from tests.faults.cluster import UpCluster, add_frontend, room_for_streams, routes_to, slow_down
from tests.faults.harness import (
    FaultRow,
    Load,
    Matrix,
    chat,
    eventually,
    generate,
    replicas,
    spread,
)
from tests.faults.probes import AdminTraffic, StreamProbe, mid_way

pytestmark = pytest.mark.slow

MODE = "up --demo"


def _applied_everywhere(urls: list[str], host: str, backend: str, within: float = 40.0) -> float:
    return max(
        eventually(lambda u=url: routes_to(u, host, backend), f"{host} on {url}", within) for url in urls
    )


def test_1_a_killed_backend_costs_no_request_and_cut_streams_end_with_an_error(
    up_cluster: UpCluster, fault_matrix: Matrix
) -> None:
    cluster, dp = up_cluster, up_cluster.dataplanes[0]
    port = cluster.sim_ports[0]
    with cluster.admin() as admin:
        add_frontend(admin, "cut", "cut.example", ["demo-sim-1"])  # streams that only sim-1 can serve
    eventually(lambda: routes_to(dp, "cut.example", "demo-sim-1"), "the cut frontend in use")
    with cluster.admin() as admin:
        room_for_streams(admin, "demo-sim-1")
    slow_down(f"http://127.0.0.1:{port}", 4)  # 12 tokens: 3 s per answer, streamed or not
    with Load(spread(generate(dp), chat(dp)), workers=8) as load:
        time.sleep(1.0)
        streams = [
            StreamProbe(dp, api, "cut.example", kind).start()
            for api in ("ollama", "openai")
            for kind in ("chat", "generate")
        ]
        mid_way(streams)
        killed = cluster.kill("sim", str(port))
        endings = {stream.label: stream.wait() for stream in streams}
        back = load.wait_for_success("demo-sim-1", after=killed, within=60)
        report = load.stop()
    fault_matrix.record(
        FaultRow.of(
            "1 backend killed",
            MODE,
            report,
            back - killed,
            f"{report.in_flight_at(killed)} in flight at the kill; "
            f"{list(endings.values()).count('error')}/{len(streams)} streams ended in error",
        )
    )
    cluster.assert_alive()
    assert report.failed == 0, report.describe_failures()
    assert set(endings.values()) == {"error"}, [(s.label, s.ending, s.chunks, s.error) for s in streams]


def test_2_a_killed_data_plane_costs_no_request_with_a_retrying_edge_and_serves_again(
    up_cluster: UpCluster, fault_matrix: Matrix
) -> None:
    cluster = up_cluster
    port = cluster.dataplanes[1].rsplit(":", 1)[1]
    with Load(replicas(cluster.dataplanes), workers=4) as load:
        time.sleep(1.0)
        killed = cluster.kill("dataplane", port)
        back = load.wait_for_success("1", after=killed, within=30)
        time.sleep(0.5)
        report = load.stop()
    retried = sum(1 for o in report.outcomes if o.detail.startswith("retried"))
    fault_matrix.record(
        FaultRow.of(
            "2 data plane killed", MODE, report, back - killed, f"{retried} retried on the other replica"
        )
    )
    cluster.assert_alive()
    assert report.failed == 0, report.describe_failures()
    assert retried > 0, "no request was refused: the kill did not happen under load"


def test_3_a_killed_control_plane_costs_no_request_and_publishes_again(
    up_cluster: UpCluster, fault_matrix: Matrix
) -> None:
    cluster, urls = up_cluster, up_cluster.dataplanes
    with Load(spread(*(generate(url) for url in urls)), workers=4) as load, cluster.admin() as admin:
        time.sleep(1.0)
        killed = cluster.kill("controlplane")
        eventually(lambda: admin.get("/v1.0/frontends").status_code == 200, "the admin API back", 60)
        add_frontend(admin, "after-cp", "after-cp.example", ["demo-sim-2"])
        applied = _applied_everywhere(urls, "after-cp.example", "demo-sim-2")
        report = load.stop()
    fault_matrix.record(
        FaultRow.of(
            "3 control plane killed", MODE, report, applied - killed, "recovery: kill to a new write served"
        )
    )
    cluster.assert_alive()
    assert report.failed == 0, report.describe_failures()


def test_4_a_killed_nats_costs_no_request_and_a_write_made_meanwhile_reaches_every_data_plane(
    up_cluster: UpCluster, fault_matrix: Matrix
) -> None:
    cluster, urls = up_cluster, up_cluster.dataplanes
    with Load(spread(*(generate(url) for url in urls)), workers=4) as load, cluster.admin() as admin:
        time.sleep(1.0)
        killed = cluster.kill("nats-server")
        add_frontend(admin, "during-nats", "during-nats.example", ["demo-sim-3"])
        # up starts NATS again 0.5 s after it died: the write above came first.
        assert not cluster.running("nats-server"), "NATS was back before the write"
        applied = _applied_everywhere(urls, "during-nats.example", "demo-sim-3")
        report = load.stop()
    fault_matrix.record(
        FaultRow.of(
            "4 NATS killed",
            MODE,
            report,
            applied - killed,
            "recovery: kill to the outage's write served everywhere",
        )
    )
    cluster.assert_alive()
    assert report.failed == 0, report.describe_failures()


def test_5_a_killed_postgres_gives_503s_loses_no_acknowledged_write_and_costs_no_request(
    up_cluster: UpCluster, fault_matrix: Matrix
) -> None:
    cluster, urls = up_cluster, up_cluster.dataplanes
    load = Load(spread(*(generate(url) for url in urls)), workers=4)
    with cluster.admin() as admin, load, AdminTraffic(admin, "demo-sim-2") as traffic:
        time.sleep(1.0)
        # The postmaster and every process it forked, as when its machine dies.
        killed = cluster.kill_group("postgres", "-D")
        eventually(lambda: traffic.unavailable > 0, "the admin API saying 503")
        back = traffic.wait_for_write(after=max(t for t, _, s in list(traffic.answers) if s == 503))
        time.sleep(0.5)
        traffic.stop()
        report = load.stop()
        missing = traffic.missing()
    fault_matrix.record(
        FaultRow.of("5 Postgres killed", MODE, report, back - killed, traffic.summary(missing))
    )
    cluster.assert_alive()
    assert not traffic.unexpected(), traffic.unexpected()
    assert not missing, f"acknowledged writes lost: {missing}"
    assert report.failed == 0, report.describe_failures()
