"""Fixtures of the fault matrix: the clusters it breaks, and the table of what each case measured.

Every case appends its row to ``fault-matrix.tsv`` in this session's pytest temporary directory and
prints it (``pytest -s`` shows it at once); the whole table is printed when the session ends.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faults.cluster import Processes, UpCluster, running_processes, running_up
from tests.faults.harness import Matrix


@pytest.fixture(scope="session")
def fault_matrix(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Matrix]:
    matrix = Matrix(tmp_path_factory.getbasetemp() / "fault-matrix.tsv")
    yield matrix
    if matrix.rows:
        capture = request.config.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled():
            print(f"\n\nfault matrix ({matrix.path}):\n{matrix.table()}\n")


@pytest.fixture(scope="module")
def processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Processes]:
    with running_processes(tmp_path_factory.mktemp("faults")) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def up_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpCluster]:
    with running_up(tmp_path_factory.mktemp("faults-up")) as cluster:
        yield cluster
