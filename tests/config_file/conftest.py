"""The control-plane fixtures (a real control plane over loopback, tables emptied before each test)
for the live tests of apply, export and import."""

from tests.controlplane.conftest import (  # noqa: F401 - fixtures
    TOKEN,
    admin,
    clean_database_url,
    controlplane,
    cp_database_url,
)
