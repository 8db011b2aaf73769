"""The open-loop load generator: requests leave at their scheduled arrival times whatever the
host does (Poisson or constant rate), and each request's latency is counted from its scheduled
arrival to the moment its response is read. A host that falls behind makes requests queue and
that queueing is in the figure; the generator never waits for a response before sending the
next request (no coordinated omission). When the generator itself sends late, that lateness is
in the latency too (and reported as send lag).

One thread, non-blocking sockets: requests due are written in one send per connection (several
host processes: round-robin, as an L4 balancer); responses are read as they come; between
events the thread sleeps in select() until 0.2 ms before the next arrival, then spins, so that
arrivals leave within microseconds of their time.

A level stops early once its SLO cannot be met any more: when more requests of the measured
window are already later than the SLO latency than the percentile allows (e.g. 1% for p99),
sending stops and the level is recorded as missed (`aborted_at_s`), so that overload costs
seconds, not minutes of backlog.
"""

from __future__ import annotations

import math
import select
import time
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Any

from onnxtax.serve.hosts import HostGroup
from onnxtax.serve.wire import ERROR, HEADER, HELLO, RECV_BYTES, REQUEST_ID

SPIN_NS = 200_000  # spin for the last 0.2 ms before an arrival; sleep in select() before that
MAX_SLEEP_S = 0.005
ABORT_CHECK_NS = 2_000_000
SETTLE_S = 60.0  # longest wait for a backlog's last responses before the host is restarted


@dataclass
class LevelRun:
    """What happened at one offered load: raw times (ns) and the counters read around the window."""

    offered: float
    sched_ns: Any  # numpy int64, relative to t0
    sent_ns: Any  # absolute, 0 = never sent
    recv_ns: Any  # absolute, 0 = no response
    t0: int
    window_start: int  # index of the first request in the measured window
    window_s: float
    batch_sizes: list[int] = field(default_factory=list)
    host_cpu_s: float | None = None
    other_cpu_s: float | None = None  # what else ran on the host's cores in the window
    generator_cpu_s: float | None = None
    wall_s: float = 0.0
    memory: dict = field(default_factory=dict)
    aborted_at_s: float | None = None
    settled: bool = True  # every sent request answered before the next level


def schedule(rate: float, duration_s: float, arrival: str, seed: int, level: int) -> Any:
    """Arrival times in ns from 0, below `duration_s`: Poisson (exponential gaps) or constant rate."""
    import numpy as np

    if arrival == "constant":
        return (np.arange(0.0, duration_s, 1.0 / rate) * 1e9).astype(np.int64)
    rng = np.random.default_rng([seed, level, int(rate * 1000)])
    times = np.cumsum(rng.exponential(1.0 / rate, int(rate * duration_s * 1.2) + 64))
    while times[-1] < duration_s:
        times = np.concatenate([times, times[-1] + np.cumsum(rng.exponential(1.0 / rate, len(times) // 2 + 64))])
    return (times[times < duration_s] * 1e9).astype(np.int64)


def run_level(group: HostGroup, payloads: list[bytes], rate: float, *, duration_s: float, warmup_s: float,
              arrival: str, seed: int, level: int, slo_ms: float, slo_percentile: float, drain_s: float
              ) -> LevelRun:
    import numpy as np

    sched = schedule(rate, duration_s, arrival, seed, level)
    n = len(sched)
    window_start = int(np.searchsorted(sched, int(warmup_s * 1e9)))
    allowed_late = math.floor((1.0 - slo_percentile / 100.0) * (n - window_start))
    slo_ns = int(slo_ms * 1e6)
    sent = np.zeros(n, dtype=np.int64)
    recv = np.zeros(n, dtype=np.int64)
    batches: list[int] = []
    conns = group.conns
    k_conn = len(conns)
    pending = [bytearray() for _ in conns]
    rest = [b""] * k_conn
    base = (level & 0xFFFFF) << 32
    pack = REQUEST_ID.pack
    n_pay = len(payloads)
    sched_list = sched.tolist()
    clock = time.monotonic_ns
    thread_cpu = time.thread_time
    out = LevelRun(rate, sched, sent, recv, 0, window_start, (duration_s - warmup_s))
    received = 0
    i = 0
    stop_at = n  # requests beyond this are never sent (the level was aborted)
    marks: dict[str, tuple] = {}
    next_check = 0

    def read(c: int, now: int) -> int:
        try:
            data = conns[c].recv(RECV_BYTES)
        except BlockingIOError:
            return 0
        if not data:
            raise group.failure("closed the connection while serving")
        if rest[c]:
            data = rest[c] + data
        pos, got, size = 0, 0, len(data)
        while size - pos >= 8:
            body, count = HEADER.unpack_from(data, pos)
            if size - pos - 8 < body:
                break
            if count == ERROR:
                raise group.failure("failed a batch: " + data[pos + 8:pos + 8 + body].decode(errors="replace"))
            if count != HELLO:
                idx = np.frombuffer(data, dtype="<u8", count=count, offset=pos + 8).astype(np.int64) - base
                if count and (idx.min() < 0 or idx.max() >= n):
                    raise group.failure("answered requests it was not sent (ids out of range)")
                recv[idx] = now
                batches.append(count)
                got += count
            pos += 8 + body
        rest[c] = data[pos:]
        return got

    t0 = clock() + 1_000_000
    out.t0 = t0
    marks["start"] = (t0, group.cpu_seconds(), thread_cpu(), group.busy_seconds())
    while True:
        now = clock()
        rel = now - t0
        if i < stop_at and sched_list[i] <= rel:
            j = min(bisect_right(sched_list, rel, i), stop_at)
            if k_conn == 1:
                pending[0] += b"".join([pack(base + k) + payloads[k % n_pay] for k in range(i, j)])
            else:
                for k in range(i, j):
                    pending[k % k_conn] += pack(base + k) + payloads[k % n_pay]
            sent[i:j] = now
            if i <= window_start < j:
                marks["window"] = (now, group.cpu_seconds(), thread_cpu(), group.busy_seconds())
            i = j
        for c in range(k_conn):
            if pending[c]:
                try:
                    m = conns[c].send(pending[c])
                    del pending[c][:m]
                except BlockingIOError:
                    pass
        for c in range(k_conn):
            received += read(c, now)
        if i >= stop_at:
            if "end" not in marks:
                marks["end"] = (now, group.cpu_seconds(), thread_cpu(), group.busy_seconds())
                out.memory = group.memory()
            if received >= stop_at or now - marks["end"][0] > drain_s * 1e9:
                break
        elif now >= next_check and rel > warmup_s * 1e9 + slo_ns:
            next_check = now + ABORT_CHECK_NS
            cut = bisect_right(sched_list, rel - slo_ns)  # requests due more than the SLO ago
            if cut > window_start:
                late = (np.count_nonzero(recv[window_start:cut] == 0)
                        + np.count_nonzero(recv[window_start:cut] - (t0 + sched[window_start:cut]) > slo_ns))
                if late > allowed_late:
                    stop_at = i
                    out.aborted_at_s = rel / 1e9
                    continue
        # wait: until the next arrival (spinning for its last 0.2 ms), or for a response
        if i < stop_at:
            gap = t0 + sched_list[i] - clock()
            if gap <= SPIN_NS or any(pending):
                continue
            timeout = min((gap - SPIN_NS) / 1e9, MAX_SLEEP_S)
        else:
            timeout = MAX_SLEEP_S
        select.select(conns, [], [], timeout)
    end = marks.get("end") or (clock(), group.cpu_seconds(), thread_cpu(), group.busy_seconds())
    start = marks.get("window") or marks["start"]
    out.wall_s = (end[0] - start[0]) / 1e9
    if start[1] is not None and end[1] is not None and out.wall_s > 0:
        out.host_cpu_s = end[1] - start[1]
        if start[3] is not None and end[3] is not None:
            out.other_cpu_s = max(0.0, (end[3] - start[3]) - out.host_cpu_s)
    out.generator_cpu_s = end[2] - start[2]
    out.batch_sizes = batches
    # a backlog the host still works on would land in the next level: wait for it
    sent_count = int(np.count_nonzero(sent))
    deadline = clock() + int(SETTLE_S * 1e9)
    while received < sent_count and clock() < deadline:
        select.select(conns, [], [], MAX_SLEEP_S)
        late_now = clock()
        for c in range(k_conn):
            received += read(c, late_now)
    out.settled = received >= sent_count
    return out


def latency_ms(run: LevelRun) -> Any:
    """Latency of every request of the measured window, ms from its scheduled arrival (inf: no
    response in time, or never sent because the level was aborted)."""
    import numpy as np

    w = run.window_start
    got = run.recv_ns[w:]
    lat = (got - (run.t0 + run.sched_ns[w:])).astype(np.float64) / 1e6
    lat[got == 0] = np.inf
    return lat


def send_lag_ms(run: LevelRun) -> Any:
    """How late the generator sent each request it sent (ms)."""
    import numpy as np

    w = run.window_start
    sent = run.sent_ns[w:]
    mask = sent > 0
    return (sent[mask] - (run.t0 + run.sched_ns[w:][mask])).astype(np.float64) / 1e6
