"""The report of one serving benchmark: per path, the latency curve of every batching policy, the
load it sustains within the SLO, its memory, cores, cold start, cost, and whether the host that
serves it computes what the eager model computes.

JSON schema (`ServeReport.to_dict()`, schema "onnxtax.serve/1"; keys stable; latency in ms, load
in rows/s, one row per request):
{
  "schema": "onnxtax.serve/1", "passed": true,
  "model": {"spec": "m.py:Net" | null, "onnx": "m.onnx"},
  "inputs": [{"name": "x", "dims": ["batch", 128], "dtype": "float32"}], "input_source": "manifest",
  "request": {"shapes": {"x": [1, 128]}, "payload_bytes": 512, "pool": 64},
  "slo": {"percentile": "p99", "ms": 20.0},
  "settings": {"arrival": "poisson", "duration_s": 2.0, "warmup_s": 0.3, "rates": null | [..],
               "start_rate": 200, "growth": 2.0, "refine": 3, "policies": [POLICY], "workers": 1,
               "intra_op_threads": 1, "seed": 0, "price_per_hour": null | 0.1},
  "cores": {"cpu_count": 2, "server": [1], "generator": [0], "shared": false},
  "paths": [{"id": "eager" | "ort" | "node", "host": "python" | "node", "engine": "torch" | "ort",
             "processes": 1, "versions": {"torch": "2.13.0"}, "status": "measured" | "failed" | "error",
             "reason": null | "...",
             "curves": [{"policy": POLICY, "qps_at_slo": 5200.0 | null, "levels": [LEVEL]}],
             "best": null | {"policy": POLICY, "qps_at_slo": 5200.0, "level": LEVEL,
                             "cost_per_1000": null | 0.0000053},
             "cold_start": null | {"runs": 3, "ready_s": SPREAD, "first_response_s": SPREAD, "peak_rss_mb": SPREAD},
             "correctness": {"status": "passed" | "failed" | "error" | "reference" | "not_run",
                             "message": null | "...", "cases": [...parity cases...]}}],
     POLICY = {"max_batch": 32, "max_wait_ms": 2.0, "threads": 1}
     LEVEL = {"offered_qps": 4000.0, "requests": 6800, "completed": 6800, "achieved_qps": 3990.0,
              "p50_ms": .., "p90_ms": .., "p95_ms": .., "p99_ms": .., "p999_ms": .., "max_ms": .., "mean_ms": ..,
              "slo_met": true, "aborted_at_s": null | 0.8, "retried": false, "send_lag_p99_ms": 0.01,
              "batch_mean": 3.2, "batch_max": 9, "host_cores": 0.41, "other_cores": 0.02, "generator_cores": 0.3,
              "rss_mb": 58.1, "pss_mb": 52.3, "cpu_ms_per_1k": 102.5}
     (cpu_ms_per_1k: the hosts' CPU time per 1,000 rows at this load)
     (other_cores: CPU that other processes took on the hosts' cores during the window: a shared machine)
     SPREAD = {"min": .., "median": .., "max": .., "values": [..]}
  "generator": [{"id": "noop:python", "host": "python", "qps_at_slo": 60000.0 | null, "policy": POLICY,
                 "saturated": true, "levels": [LEVEL]}],     (saturated: some level missed the SLO)      (a host that computes nothing: the generator and wire's own floor)
  "ratios": [{"a": "ort", "b": "eager", "qps_at_slo": 3.9, "rss": 0.3, "cold_start": 0.1}],
  "gates": [{"gate": "min_qps_at_slo" | "max_p99_ms", "path": "ort", "load": null | 1000.0,
             "percentile": "p99", "limit": 5000.0, "value": 4200.0, "passed": false, "message": "..."}],
  "failures": ["node: output prob differs from the eager model at batch=4: ..."],
  "notes": [...], "host": {...host_facts...}, "duration_s": 95.2
}
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from onnxtax.bench.timing import Spread
from onnxtax.core.report import Verdict

SCHEMA = "onnxtax.serve/1"
LOAD_TOLERANCE = 0.95  # a level whose achieved throughput is below this share of the offered load missed


def fmt_policy(policy: dict) -> str:
    wait = f", wait {policy['max_wait_ms']:g} ms" if policy["max_batch"] > 1 else ""
    threads = f", {policy['threads']} threads" if policy.get("threads", 1) != 1 else ""
    return f"batch {policy['max_batch']}{wait}{threads}"


@dataclass
class LevelResult:
    """One offered load on one curve."""

    offered_qps: float
    requests: int
    completed: int
    achieved_qps: float
    latency_ms: dict[str, float]  # p50 p90 p95 p99 p999 max mean
    slo_met: bool
    aborted_at_s: float | None = None
    retried: bool = False
    send_lag_p99_ms: float | None = None
    batch_mean: float | None = None
    batch_max: int | None = None
    host_cores: float | None = None
    other_cores: float | None = None  # other processes on the host's cores (a shared machine)
    generator_cores: float | None = None
    rss_mb: float | None = None
    pss_mb: float | None = None

    def get(self, key: str) -> float:
        return self.latency_ms[key.replace(".", "")]

    @property
    def cpu_ms_per_1k(self) -> float | None:
        """Host CPU time per 1,000 rows served at this load (ms): what the host spends, whatever else
        runs on the machine (a core shared with other processes lowers the load, not this)."""
        if self.host_cores is None or not self.achieved_qps:
            return None
        return self.host_cores / self.achieved_qps * 1e6

    def to_dict(self) -> dict:
        out = {"offered_qps": self.offered_qps, "requests": self.requests, "completed": self.completed,
               "achieved_qps": self.achieved_qps}
        out.update({f"{k}_ms": v for k, v in self.latency_ms.items()})
        out["cpu_ms_per_1k"] = self.cpu_ms_per_1k
        out.update({k: getattr(self, k) for k in ("slo_met", "aborted_at_s", "retried", "send_lag_p99_ms",
                                                   "batch_mean", "batch_max", "host_cores", "other_cores", "generator_cores",
                                                   "rss_mb", "pss_mb")})
        return out


def qps_within(levels: list[LevelResult]) -> LevelResult | None:
    """The highest offered load that met the SLO below every load that missed it (a pass above a
    miss is noise, not capacity)."""
    missed = [lv.offered_qps for lv in levels if not lv.slo_met]
    ceiling = min(missed) if missed else math.inf
    met = [lv for lv in levels if lv.slo_met and lv.offered_qps < ceiling]
    return max(met, key=lambda lv: lv.offered_qps) if met else None


@dataclass
class Curve:
    policy: dict
    levels: list[LevelResult] = field(default_factory=list)

    @property
    def at_slo(self) -> LevelResult | None:
        return qps_within(self.levels)

    @property
    def qps_at_slo(self) -> float | None:
        level = self.at_slo
        return level.offered_qps if level else None

    def level_at(self, load: float) -> LevelResult | None:
        return next((lv for lv in self.levels if abs(lv.offered_qps - load) <= 1e-6 * max(1.0, load)), None)

    def to_dict(self) -> dict:
        return {"policy": dict(self.policy), "qps_at_slo": self.qps_at_slo,
                "levels": [lv.to_dict() for lv in sorted(self.levels, key=lambda lv: lv.offered_qps)]}


@dataclass
class ColdStart:
    ready_s: Spread
    first_response_s: Spread
    peak_rss_mb: Spread

    def to_dict(self) -> dict:
        return {"runs": len(self.ready_s.values), "ready_s": self.ready_s.to_dict(),
                "first_response_s": self.first_response_s.to_dict(), "peak_rss_mb": self.peak_rss_mb.to_dict()}


@dataclass
class Correctness:
    status: str = "not_run"  # passed | failed | error | reference | not_run
    message: str | None = None
    cases: list[Any] = field(default_factory=list)  # parity.CaseResult

    def to_dict(self) -> dict:
        return {"status": self.status, "message": self.message, "cases": [c.to_dict() for c in self.cases]}


@dataclass
class PathResult:
    id: str
    host: str
    engine: str
    processes: int = 1
    versions: dict = field(default_factory=dict)
    status: str = "measured"  # measured | failed | error
    reason: str | None = None
    curves: list[Curve] = field(default_factory=list)
    cold_start: ColdStart | None = None
    correctness: Correctness = field(default_factory=Correctness)
    cost_per_1000: float | None = None

    @property
    def best(self) -> Curve | None:
        """The policy that sustains the highest load within the SLO (ties: the lower p99 there)."""
        scored = [c for c in self.curves if c.at_slo is not None]
        if not scored:
            return None
        return max(scored, key=lambda c: (c.qps_at_slo, -c.at_slo.latency_ms["p99"]))  # type: ignore[union-attr]

    @property
    def qps_at_slo(self) -> float | None:
        best = self.best
        return best.qps_at_slo if best else None

    def to_dict(self) -> dict:
        best = self.best
        return {"id": self.id, "host": self.host, "engine": self.engine, "processes": self.processes,
                "versions": dict(self.versions), "status": self.status, "reason": self.reason,
                "curves": [c.to_dict() for c in self.curves],
                "best": None if best is None else {"policy": dict(best.policy), "qps_at_slo": best.qps_at_slo,
                                                   "level": best.at_slo.to_dict() if best.at_slo else None,
                                                   "cost_per_1000": self.cost_per_1000},
                "cold_start": self.cold_start.to_dict() if self.cold_start else None,
                "correctness": self.correctness.to_dict()}


@dataclass
class GateResult:
    gate: str
    path: str
    load: float | None
    percentile: str
    limit: float
    value: float | None
    passed: bool
    message: str

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class ServeReport(Verdict):
    onnx: str
    spec: str | None
    inputs: list[Any]
    input_source: str
    request: dict
    slo: dict
    settings: dict
    cores: dict
    paths: list[PathResult] = field(default_factory=list)
    generator: list[dict] = field(default_factory=list)
    gates: list[GateResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    host: dict = field(default_factory=dict)
    duration_s: float = 0.0

    @property
    def failures(self) -> list[str]:
        out = []
        for p in self.paths:
            if p.status != "measured":
                out.append(p.reason or f"{p.id}: {p.status}")
            elif p.correctness.status in ("failed", "error"):
                out.append(f"{p.id}: {p.correctness.message}")
        return out

    @property
    def failed_gates(self) -> list[GateResult]:
        return [g for g in self.gates if not g.passed]

    @property
    def passed(self) -> bool:
        return not self.failures and not self.failed_gates

    def path(self, path_id: str) -> PathResult | None:
        return next((p for p in self.paths if p.id == path_id), None)

    def ratios(self) -> list[dict]:
        """Each later path against each earlier one (ort/eager, node/eager, node/ort): the tax under load."""
        out = []
        ids = [p.id for p in self.paths]
        for i, a in enumerate(ids):
            for b in ids[:i]:
                pa, pb = self.path(a), self.path(b)
                assert pa is not None and pb is not None
                row: dict[str, Any] = {"a": a, "b": b}
                row["qps_at_slo"] = _ratio(pa.qps_at_slo, pb.qps_at_slo)
                la, lb = (p.best.at_slo if p.best else None for p in (pa, pb))
                row["rss"] = _ratio(la.rss_mb if la else None, lb.rss_mb if lb else None)
                row["cold_start"] = _ratio(pa.cold_start.first_response_s.median if pa.cold_start else None,
                                           pb.cold_start.first_response_s.median if pb.cold_start else None)
                out.append(row)
        return out

    def to_dict(self) -> dict:
        from onnxtax.core.report import jsonable

        return jsonable({"schema": SCHEMA, "passed": self.passed, "model": {"spec": self.spec, "onnx": self.onnx},
                         "inputs": [s.to_dict() for s in self.inputs], "input_source": self.input_source,
                         "request": self.request, "slo": self.slo, "settings": self.settings, "cores": self.cores,
                         "paths": [p.to_dict() for p in self.paths], "generator": self.generator,
                         "ratios": self.ratios(), "gates": [g.to_dict() for g in self.gates],
                         "failures": self.failures, "notes": list(self.notes), "host": self.host,
                         "duration_s": self.duration_s})


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def evaluate_gates(report: ServeReport, min_qps: dict[str, float], max_p99: dict[str, float]) -> list[GateResult]:
    """--min-qps-at-slo: the path's load within the SLO; --max-p99-ms: p99 at the load named (@LOAD,
    the best policy there), else at the path's own load within the SLO."""
    key, slo_ms = report.slo["percentile"], report.slo["ms"]
    out: list[GateResult] = []
    for p in report.paths:
        if p.status != "measured":
            continue
        for gate_key, limit in min_qps.items():
            if gate_key not in ("*", p.id):
                continue
            value = p.qps_at_slo
            best = p.best
            passed = value is not None and value >= limit
            where = f" ({fmt_policy(best.policy)})" if best else ""
            text = (f"{p.id}: {value:,.0f} rows/s within {key} <= {slo_ms:g} ms{where}" if value is not None
                    else f"{p.id}: no measured load met {key} <= {slo_ms:g} ms")
            out.append(GateResult("min_qps_at_slo", p.id, value, key, limit, value, passed,
                                  f"{text}; {'>=' if passed else 'below'} the minimum {limit:,.0f} rows/s"))
        for gate_key, limit in max_p99.items():
            path, _, load_text = gate_key.partition("@")
            if path not in ("*", p.id):
                continue
            if load_text:
                load = float(load_text)
                found = [(c, c.level_at(load)) for c in p.curves]
                found = [(c, lv) for c, lv in found if lv is not None]
                c, level = min(found, key=lambda x: x[1].latency_ms["p99"]) if found else (None, None)
            else:
                c = p.best
                level = c.at_slo if c else None
                load = level.offered_qps if level else None
            value = level.latency_ms["p99"] if level else None
            passed = value is not None and value <= limit
            at = f"{load:,.0f} rows/s" if load is not None else "no load within the SLO"
            text = (f"{p.id}: p99 {value:.3g} ms at {at} ({fmt_policy(c.policy)})" if value is not None and c
                    else f"{p.id}: no p99 measured at {at}")
            out.append(GateResult("max_p99_ms", p.id, load, "p99", limit, value, passed,
                                  f"{text}; {'within' if passed else 'above'} the limit {limit:g} ms"))
    return out
