"""The fault matrix against separately started processes: each part of the cluster is killed with
SIGKILL (or cut off the network) under steady client load, and started again by the test.

One cluster serves the whole module, in file order; each case leaves it whole again. See
``tests.faults.harness`` for what is measured, and the README's "Reliability" section for the table.
"""

from __future__ import annotations

import socket
import time
from contextlib import ExitStack

import httpx
import pytest

from tests.faults import netns
from tests.faults.cluster import (
    TOKEN,
    Part,
    Processes,
    add_backend,
    add_frontend,
    kill_server,
    restart_server,
    room_for_streams,
    routes_to,
    slow_down,
)
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

MODE = "processes"


def _both(cluster: Processes) -> list[str]:
    return [cluster.dataplane_url(0), cluster.dataplane_url(1)]


def _applied_everywhere(urls: list[str], host: str, backend: str, within: float = 30.0) -> float:
    """When every data plane of ``urls`` routed ``host`` to ``backend``."""
    return max(
        eventually(lambda u=url: routes_to(u, host, backend), f"{host} on {url}", within) for url in urls
    )


def test_1_a_killed_backend_costs_no_request_and_cut_streams_end_with_an_error(
    processes: Processes, fault_matrix: Matrix
) -> None:
    cluster, dp = processes, processes.dataplane_url(0)
    with ExitStack() as stack, cluster.admin() as admin:
        # Streams that only one backend can serve, of either API format, each to a client of either:
        # the Ollama one relays or translates to NDJSON, the OpenAI one to SSE.
        openai_sim = cluster.sim("sim-openai", "127.0.0.1", "openai")
        stack.callback(openai_sim.stop)
        openai_sim.start()
        add_backend(admin, openai_sim, "OpenAI")
        add_frontend(admin, "cut", "cut.example", ["sim0"])
        add_frontend(admin, "cut-openai", "cut-openai.example", ["sim-openai"])
        eventually(lambda: routes_to(dp, "cut.example", "sim0"), "the cut frontend in use")
        eventually(
            lambda: routes_to(dp, "cut-openai.example", "sim-openai"), "the cut-openai frontend in use"
        )
        for backend, url in (("sim0", cluster.sim_url(0)), ("sim-openai", openai_sim.origin)):
            room_for_streams(admin, backend)
            slow_down(url, 4)  # 12 tokens: 3 s per answer, streamed or not
        with Load(spread(generate(dp), chat(dp)), workers=8) as load:
            time.sleep(1.0)
            hosts = ("cut.example", "cut-openai.example")
            streams = [
                StreamProbe(dp, api, host, kind).start()
                for host in hosts
                for api in ("ollama", "openai")
                for kind in ("chat", "generate")
            ]
            mid_way(streams)
            killed = cluster.sims[0].kill()
            openai_sim.kill()
            endings = {stream.label: stream.wait() for stream in streams}
            time.sleep(1.0)
            restarted = cluster.sims[0].start()
            back = load.wait_for_success("sim0", after=restarted, within=30)
            report = load.stop()
        admin.delete("/v1.0/frontends/cut-openai")
        admin.delete("/v1.0/backends/sim-openai")
    cut = sum(1 for ending in endings.values() if ending == "error")
    note = f"{report.in_flight_at(killed)} in flight at the kill; {cut}/{len(streams)} streams ended in error"
    fault_matrix.record(FaultRow.of("1 backend killed", MODE, report, back - restarted, note))
    assert report.failed == 0, report.describe_failures()
    assert set(endings.values()) == {"error"}, [(s.label, s.ending, s.chunks, s.error) for s in streams]


def test_2_a_killed_data_plane_costs_no_request_with_a_retrying_edge_and_serves_again(
    processes: Processes, fault_matrix: Matrix
) -> None:
    cluster = processes
    with Load(replicas(_both(cluster)), workers=4) as load:
        time.sleep(1.0)
        killed = cluster.dataplanes[1].kill()
        time.sleep(2.0)
        restarted = cluster.dataplanes[1].launch()
        back = load.wait_for_success("1", after=restarted, within=30)
        time.sleep(0.5)
        report = load.stop()
    cluster.dataplanes[1].wait_ready()
    retried = sum(1 for o in report.outcomes if o.detail.startswith("retried"))
    in_flight = sum(
        1 for o in report.outcomes if o.started <= killed < o.ended and o.detail.startswith("retried")
    )
    fault_matrix.record(
        FaultRow.of(
            "2 data plane killed",
            MODE,
            report,
            back - restarted,
            f"{retried} retried on the other replica ({in_flight} cut in flight)",
        )
    )
    assert report.failed == 0, report.describe_failures()
    assert retried > 0, "no request was refused: the kill did not happen under load"


def test_3_a_killed_control_plane_costs_no_request_and_publishes_again(
    processes: Processes, fault_matrix: Matrix
) -> None:
    cluster, urls = processes, _both(processes)
    with Load(spread(*(generate(url) for url in urls)), workers=4) as load:
        time.sleep(1.0)
        cluster.controlplane.kill()
        time.sleep(2.0)
        restarted = cluster.controlplane.start()
        with cluster.admin() as admin:
            add_frontend(admin, "after-cp", "after-cp.example", ["sim1"])
        applied = _applied_everywhere(urls, "after-cp.example", "sim1")
        report = load.stop()
    fault_matrix.record(
        FaultRow.of(
            "3 control plane killed",
            MODE,
            report,
            applied - restarted,
            "recovery: restart to a new write served",
        )
    )
    assert report.failed == 0, report.describe_failures()


def test_4_a_killed_nats_costs_no_request_and_a_write_made_meanwhile_reaches_every_data_plane(
    processes: Processes, fault_matrix: Matrix
) -> None:
    cluster, urls = processes, _both(processes)
    with Load(spread(*(generate(url) for url in urls)), workers=4) as load:
        time.sleep(1.0)
        kill_server(cluster.nats)
        time.sleep(0.5)
        with cluster.admin() as admin:
            add_frontend(admin, "during-nats", "during-nats.example", ["sim1"])
        assert not cluster.nats.running  # the write was made during the outage
        time.sleep(4.0)  # longer than the data planes' TTL (3 s): the control plane counts them out
        restarted = restart_server(cluster.nats)
        applied = _applied_everywhere(urls, "during-nats.example", "sim1")
        report = load.stop()
    fault_matrix.record(
        FaultRow.of(
            "4 NATS killed",
            MODE,
            report,
            applied - restarted,
            "down 4.5 s; recovery: restart to the outage's write served everywhere",
        )
    )
    assert report.failed == 0, report.describe_failures()


def test_5_a_killed_postgres_gives_503s_loses_no_acknowledged_write_and_costs_no_request(
    processes: Processes, fault_matrix: Matrix
) -> None:
    cluster, urls = processes, _both(processes)
    load = Load(spread(*(generate(url) for url in urls)), workers=4)
    with cluster.admin() as admin, load, AdminTraffic(admin, "sim1") as traffic:
        time.sleep(1.0)
        kill_server(cluster.postgres, group=True)
        time.sleep(3.0)
        restarted = restart_server(cluster.postgres)
        back = traffic.wait_for_write(after=restarted)
        time.sleep(0.5)
        traffic.stop()
        report = load.stop()
        missing = traffic.missing()
    fault_matrix.record(
        FaultRow.of("5 Postgres killed", MODE, report, back - restarted, traffic.summary(missing))
    )
    assert not traffic.unexpected(), traffic.unexpected()
    assert traffic.unavailable > 0, "the admin API never noticed the outage"
    assert not missing, f"acknowledged writes lost: {missing}"
    assert report.failed == 0, report.describe_failures()


def _listed(admin: httpx.Client, dataplane: str) -> dict[str, object]:
    planes = {p["Id"]: p for p in admin.get("/v1.0/dataplanes").json()}
    return planes.get(dataplane, {"Live": False, "AppliedRevision": 0})


def _published(admin: httpx.Client, frontend: str) -> int:
    """The revision of the published snapshot once it holds ``frontend``."""
    found: list[int] = []

    def holds() -> bool:
        snapshot = admin.get("/v1.0/snapshot").json()
        if any(f["id"] == frontend for f in snapshot["Content"]["frontends"]):
            found.append(snapshot["Revision"])
            return True
        return False

    eventually(holds, f"a snapshot with {frontend} published")
    return found[0]


def test_6_a_data_plane_cut_off_the_bus_keeps_serving_and_rejoins(
    processes: Processes, fault_matrix: Matrix
) -> None:
    reason = netns.unavailable()
    if reason is not None:
        pytest.skip(reason)
    cluster = processes
    with netns.network_namespace() as ns, ExitStack() as stack, cluster.admin() as admin:
        # Its backend listens on the serving link, its NATS is reached over the bus link.
        sim = cluster.sim("sim-ns", ns.serve_host)
        stack.callback(sim.stop)
        sim.start()
        add_backend(admin, sim)
        add_frontend(admin, "netns", "netns.example", [sim.name])
        port = 43411  # in a namespace of its own: nothing else listens there
        nats_url = f"nats://{ns.bus_host}:{cluster.nats.port}"
        dataplane = cluster.dataplane(
            "dp-ns", host=ns.serve_inner, port=port, nats_url=nats_url, prefix=ns.prefix
        )
        stack.callback(dataplane.stop)
        dataplane.start()
        url = dataplane.origin
        eventually(lambda: routes_to(url, "netns.example", "sim-ns"), "the namespaced data plane serving")
        eventually(lambda: _listed(admin, "dp-ns")["Live"] is True, "the namespaced data plane reporting")

        with Load(generate(url, "netns.example"), workers=3) as load:
            time.sleep(1.0)
            ns.cut()
            cut_at = time.monotonic()
            add_frontend(admin, "netns-during", "netns-during.example", ["sim-ns"])
            revision = _published(admin, "netns-during")
            eventually(lambda: _listed(admin, "dp-ns")["Live"] is False, "the cut data plane counted out", 15)
            time.sleep(max(0.0, cut_at + 6.0 - time.monotonic()))
            assert not routes_to(url, "netns-during.example", "sim-ns"), "the cut did not hold"
            ns.restore()
            back_at = time.monotonic()
            applied = eventually(
                lambda: routes_to(url, "netns-during.example", "sim-ns"), "the new frontend", 40
            )
            rejoined = eventually(
                lambda: (
                    _listed(admin, "dp-ns")["Live"] is True
                    and _listed(admin, "dp-ns")["AppliedRevision"] >= revision
                ),
                "the data plane reporting the new revision",
                40,
            )
            report = load.stop()
    fault_matrix.record(
        FaultRow.of(
            "6 data plane cut off (netns)",
            MODE,
            report,
            max(applied, rejoined) - back_at,
            f"bus link down {back_at - cut_at:.1f} s; recovery: link up to rejoined",
        )
    )
    assert report.failed == 0, report.describe_failures()


def _leader(url: str) -> str:
    """The id of the control plane that leads, as the replica at ``url`` sees it."""
    response = httpx.get(url + "/v1.0/cluster", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    return str(response.json()["Leader"]) if response.status_code == 200 else ""


def test_7_a_killed_leading_control_plane_is_replaced_by_the_other_replica(
    processes: Processes, fault_matrix: Matrix
) -> None:
    cluster, urls = processes, _both(processes)
    with ExitStack() as stack:
        second = cluster.controlplane_replica("controlplane-b")
        stack.callback(second.stop)
        second.start()
        replicas = {cluster.controlplane.origin: cluster.controlplane, second.origin: second}
        eventually(lambda: _leader(second.origin) != "", "the second replica naming the leader")
        with Load(spread(*(generate(url) for url in urls)), workers=4) as load:
            time.sleep(1.0)
            leading = next(p for p in replicas.values() if _leader(p.origin) == _id(p))
            survivor = next(p for p in replicas.values() if p is not leading)
            killed = leading.kill()
            took_over = eventually(
                lambda: _leader(survivor.origin) == _id(survivor), "the other replica leading", 15
            )
            with httpx.Client(
                base_url=survivor.origin, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
            ) as admin:
                add_frontend(admin, "after-leader", "after-leader.example", ["sim1"])
            applied = _applied_everywhere(urls, "after-leader.example", "sim1")
            report = load.stop()
        leading.start()  # back as a follower: the cluster is whole again for the next cases
    # The documented worst case (TTL + 2 polls: 3.5 s), plus this test's own polling of the view.
    assert took_over - killed <= 3.5 + 1.0, took_over - killed
    fault_matrix.record(
        FaultRow.of(
            "7 leading control plane killed (2 replicas)",
            MODE,
            report,
            applied - killed,
            f"takeover {took_over - killed:.2f} s; recovery: kill to a write on the other served",
        )
    )
    assert report.failed == 0, report.describe_failures()


def _id(part: Part) -> str:
    """A control plane's id in the lease: as set, or ``<host name>-<port>``."""
    return part.env.get("OLLAMAFLOW_CONTROLPLANE_ID") or f"{socket.gethostname()}-{part.port}"
