"""The many-streams scenario's pure parts: timing, file descriptors, memory per open stream. No I/O.

N slow streams are opened through one data plane at a steady rate and held open together; the data
plane's resident memory with them all open, less its memory idle, divided by N, is what an open
stream costs it. A data plane of several worker processes counts them all; each holds about its
share of the streams, so each needs about its share of open files.
"""

from __future__ import annotations

import math

import msgspec

from ollamaflow.bench.scenarios import percentile

__all__ = [
    "ANSWER_TOKENS",
    "CONNECTION_MARGIN",
    "GENERATOR_SPARE_FILES",
    "STREAMS_PER_SIM",
    "StreamsPlan",
    "StreamsReport",
    "StreamsResult",
    "StreamsSpec",
    "dataplane_connections",
    "dataplane_files",
    "generator_files",
    "generators_for",
    "merge_results",
    "most_streams",
    "per_stream_kb",
    "per_worker",
    "plan_streams",
    "simulators_for",
    "streams_warnings",
]

# Chunks of each simulated answer: few, so that N streams cost little CPU while they are held open.
ANSWER_TOKENS = 4
# Files a data plane holds besides its connections (listening socket, log, the bus, the event loop;
# about 20 measured), with room to spare.
_SPARE_FILES = 64
# Streams one simulator holds at once: its server (granian) takes at most 2,048 requests at a time
# per worker, so more streams are spread over more simulators.
STREAMS_PER_SIM = 2000
# Connections the data plane may hold beyond the streams (the warm-up's, the bench's own).
CONNECTION_MARGIN = 16
# The kernel spreads a port's connections over its SO_REUSEPORT workers by a hash of their addresses,
# not evenly: a worker is planned for its even share plus this many standard deviations of a random
# split (for 10,000 streams over 2 workers: 5,000 + 250).
_SPREAD_DEVIATIONS = 5
# Files a stream generator process holds besides its streams' connections.
GENERATOR_SPARE_FILES = 256


class StreamsPlan(msgspec.Struct, frozen=True, kw_only=True):
    streams: int
    open_rate: float  # streams opened per second, over all generator processes
    ramp_s: float  # time to open them all at that rate
    hold_s: float  # how long each stream lasts: the ramp plus the time they are all open together
    tokens_per_second: float  # the simulator's pace that makes a stream of ANSWER_TOKENS last hold_s


def plan_streams(streams: int, open_rate: float, together_s: float) -> StreamsPlan:
    """Every stream lasts long enough to still be open when the last one opens, plus ``together_s``
    (at least 1 s); the ramp counts half again, for a machine that opens them late."""
    ramp = streams / open_rate
    hold = 1.5 * ramp + max(1.0, together_s)
    # The first chunk goes out at once, chunk i at i / tokens_per_second: the last at hold.
    return StreamsPlan(
        streams=streams,
        open_rate=open_rate,
        ramp_s=ramp,
        hold_s=hold,
        tokens_per_second=(ANSWER_TOKENS - 1) / hold,
    )


def simulators_for(streams: int) -> int:
    return max(1, -(-streams // STREAMS_PER_SIM))


def per_worker(streams: int, workers: int = 1) -> int:
    """The most streams one of ``workers`` worker processes is planned to hold."""
    if workers <= 1:
        return streams
    share = streams / workers
    spread = math.sqrt(share * (1 - 1 / workers))  # the standard deviation of a random split
    return min(streams, math.ceil(share + _SPREAD_DEVIATIONS * spread))


def dataplane_connections(streams: int, workers: int = 1) -> int:
    """Each worker's OLLAMAFLOW_CLIENT_MAX_CONNECTIONS and OLLAMAFLOW_UPSTREAM_MAX_CONNECTIONS for
    ``streams`` streams (by default 10,000 and 1,024: the second would queue the rest)."""
    return per_worker(streams, workers) + CONNECTION_MARGIN


def dataplane_files(streams: int, workers: int = 1) -> int:
    """Open files each worker of a data plane needs to hold ``streams`` streams among them: a client
    and a backend connection each (HTTP/1.1: one request per connection at a time), and its own."""
    return 2 * dataplane_connections(streams, workers) + _SPARE_FILES


def generator_files(streams: int, processes: int) -> int:
    """Open files the busiest of ``processes`` stream generators needs: a connection per stream."""
    return -(-streams // max(1, processes)) + GENERATOR_SPARE_FILES


def generators_for(streams: int, open_files: int) -> int:
    """The fewest stream generator processes that hold ``streams`` connections with this open-files
    limit each; 0 when the limit leaves a generator no room for any."""
    room = open_files - GENERATOR_SPARE_FILES
    return -(-streams // room) if room > 0 else 0


def most_streams(open_files: int, workers: int = 1) -> int:
    """The most streams a data plane of ``workers`` processes, each with this open-files limit, can
    hold (``dataplane_files``'s inverse)."""
    low, high = 0, max(0, open_files) * max(1, workers)
    while low < high:  # the largest count whose files fit
        middle = (low + high + 1) // 2
        if dataplane_files(middle, workers) <= open_files:
            low = middle
        else:
            high = middle - 1
    return low


class StreamsSpec(msgspec.Struct, kw_only=True):
    """What one generator process opens: ``count`` streams at ``rate`` per second, its first one
    ``phase_s`` after the common start."""

    url: str
    body: bytes
    count: int
    rate: float
    phase_s: float = 0.0
    start_at: float = 0.0
    timeout_s: float = 120.0


class StreamsResult(msgspec.Struct, kw_only=True):
    completed: int  # answered 200 and ended with the final ("done": true) chunk
    errors: int
    first_chunk_ms: list[float]  # from the request's send to its first chunk, completed streams
    first_error: str = ""
    opened_s: float = 0.0  # from the common start until this process had sent all its requests


class StreamsReport(msgspec.Struct, frozen=True, kw_only=True):
    generator: str
    streams: int
    open_rate: float
    hold_s: float
    tokens_per_second: float
    completed: int
    errors: int
    all_completed: bool
    simulators: int  # the streams are spread over this many (round robin)
    peak_open: int  # most streams the simulators were answering at once (their sum)
    idle_rss_kb: int  # the data plane's RSS (all its processes) before the streams, after a warm-up
    open_rss_kb: int  # its highest RSS while they were open
    per_stream_kb: float  # (open_rss_kb - idle_rss_kb) / peak_open
    first_chunk_p50_ms: float
    first_chunk_p99_ms: float
    ramp_s: float  # how long opening them all took (the slowest process)
    nofile_limit: int  # the open-files limit the data plane ran with (its lowest, over its processes)
    first_error: str = ""
    warnings: list[str] = []
    workers: int = 1  # the data plane's worker processes (ollamaflow dataplane --workers)


def per_stream_kb(idle_rss_kb: int, open_rss_kb: int, open_streams: int) -> float:
    """Memory per open stream; 0.0 when none was open."""
    if open_streams <= 0:
        return 0.0
    return max(0, open_rss_kb - idle_rss_kb) / open_streams


def merge_results(results: list[StreamsResult]) -> tuple[int, int, float, float, str, float]:
    """(completed, errors, first-chunk p50 and p99 in ms, first error, ramp seconds) over processes."""
    firsts = sorted(ms for r in results for ms in r.first_chunk_ms)
    return (
        sum(r.completed for r in results),
        sum(r.errors for r in results),
        percentile(firsts, 0.50),
        percentile(firsts, 0.99),
        next((r.first_error for r in results if r.first_error), ""),
        max((r.opened_s for r in results), default=0.0),
    )


def streams_warnings(plan: StreamsPlan, peak_open: int, ramp_s: float) -> list[str]:
    found = []
    if peak_open < plan.streams:
        found.append(
            f"only {peak_open:,} of {plan.streams:,} streams were open at once: the memory per stream is "
            "over those (lower --rate to open them more slowly, or raise --duration)"
        )
    if ramp_s > plan.ramp_s * 1.5 + 1.0:
        found.append(f"opening took {ramp_s:.1f} s instead of {plan.ramp_s:.1f} s: the generator fell behind")
    return found
