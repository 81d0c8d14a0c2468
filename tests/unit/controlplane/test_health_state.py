"""The pure parts of health probing: the state machine, TimeSpan text, request addressing."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from controlplane.health.state import Health, Thresholds, timespan
from controlplane.health.targets import target_of

T0 = datetime(2030, 1, 1, tzinfo=UTC)
THREE = Thresholds(healthy=3, unhealthy=2)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_unknown_before_the_first_probe_then_the_first_result_decides() -> None:
    health = Health()
    assert not health.healthy and not health.checked
    assert health.record(True, at(0), THREE)
    assert health.healthy and health.checked and health.healthy_since == at(0)

    failing = Health()
    assert failing.record(False, at(0), THREE, "cannot connect")
    assert not failing.healthy and failing.checked
    assert failing.unhealthy_since == at(0) and failing.last_error == "cannot connect"


def test_thresholds_count_consecutive_results() -> None:
    health = Health()
    health.record(True, at(0), THREE)
    assert not health.record(False, at(1), THREE, "boom")  # 1 of 2 failures: still healthy
    assert health.healthy and health.failures == 1
    assert not health.record(True, at(2), THREE)  # a success resets the failure count
    assert health.failures == 0
    assert not health.record(False, at(3), THREE, "boom")
    assert health.record(False, at(4), THREE, "boom")  # the second in a row
    assert not health.healthy and health.unhealthy_since == at(4) and health.healthy_since is None

    assert not health.record(True, at(5), THREE)
    assert not health.record(True, at(6), THREE)
    assert not health.record(False, at(7), THREE, "x")  # breaks the run of successes
    assert not health.record(True, at(8), THREE)
    assert not health.record(True, at(9), THREE)
    assert health.record(True, at(10), THREE)  # three in a row
    assert health.healthy and health.healthy_since == at(10) and health.unhealthy_since is None
    assert health.last_error == ""


def test_uptime_and_downtime() -> None:
    health = Health()
    health.record(True, at(0), THREE)
    assert health.uptime(at(62.5)) == timedelta(seconds=62.5) and health.downtime(at(62.5)) is None
    health.record(False, at(70), Thresholds(unhealthy=1))
    assert health.uptime(at(80)) is None and health.downtime(at(80)) == timedelta(seconds=10)


def test_seeded_state_counts_as_checked_so_one_failure_does_not_eject() -> None:
    health = Health.seeded(True, at(0))
    assert health.checked and health.healthy
    assert not health.record(False, at(1), THREE, "blip")
    assert health.healthy
    down = Health.seeded(False, at(0))
    assert not down.record(True, at(1), THREE)  # needs the healthy threshold, not one success
    assert not down.healthy


def test_timespan_prints_like_dotnet() -> None:
    assert timespan(None) is None
    assert timespan(timedelta(minutes=1, seconds=2, microseconds=123456)) == "00:01:02.1234560"
    assert timespan(timedelta(days=2, hours=3, seconds=4)) == "2.03:00:04.0000000"
    assert timespan(timedelta(seconds=-1)) == "00:00:00.0000000"


@dataclass
class Row:
    identifier: str = "b1"
    hostname: str = "127.0.0.1"
    port: int = 11434
    ssl: bool = False
    api_format: str = "Ollama"
    active: bool = True
    healthy_threshold: int = 2
    unhealthy_threshold: int = 3
    health_check_method: str = "HEAD"
    health_check_url: str = "/health"
    health_check_interval_ms: int | None = None
    health_check_timeout_ms: int | None = None
    bearer_token: str | None = "s3cret"
    querystring: str | None = "?token=abc"
    headers: dict[str, str] = field(default_factory=lambda: {"X-Team": "ml", "authorization": "old"})


def test_target_applies_the_backends_auth_querystring_and_headers() -> None:
    target = target_of(Row())
    assert target.url("/health") == "http://127.0.0.1:11434/health?token=abc"
    assert target.url("/api/tags?x=1") == "http://127.0.0.1:11434/api/tags?x=1&token=abc"
    assert target.headers == (("X-Team", "ml"), ("Authorization", "Bearer s3cret"))
    assert target.method == "HEAD" and target.thresholds == Thresholds(healthy=2, unhealthy=3)
    assert (target.interval, target.timeout) == (None, None)  # the monitor's defaults
    timed = target_of(Row(health_check_interval_ms=1500, health_check_timeout_ms=250))
    assert (timed.interval, timed.timeout) == (1.5, 0.25)
    assert timed.probe_identity() == target.probe_identity()  # re-scheduled, not started over
    plain = target_of(Row(bearer_token=None, querystring=None, headers={}, ssl=True, hostname="::1"))
    assert plain.url("/") == "https://[::1]:11434/" and plain.headers == ()


def test_probe_identity_ignores_thresholds_but_not_the_address() -> None:
    base = target_of(Row())
    assert target_of(Row(healthy_threshold=9)).probe_identity() == base.probe_identity()
    assert target_of(Row(port=1)).probe_identity() != base.probe_identity()
    assert target_of(Row(health_check_url="/")).probe_identity() != base.probe_identity()
