"""`run_serve_bench`: each path served by its own host processes on the server's cores, driven by
the open-loop generator on the generator's cores, at rising offered load, under each batching
policy; then the generator's own floor (a host that computes nothing), cold starts in fresh
processes, cost, ratios and gates.

The ramp (no `rates` given): from `start_rate`, x`growth` while the SLO is met (down by the same
factor when the first level already misses it), then `refine` bisections (geometric) between the
highest load that met it and the lowest that missed. A level that misses is measured once more
before it counts (a stall of the machine is not the host's capacity); both runs are reported.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from onnxtax.core.defaults import ORT_OPT_LEVELS
from onnxtax.core.errors import InputSpecError
from onnxtax.core.progress import Progress, silent
from onnxtax.serve.hosts import HostFailed, HostGroup, Launch, pinned, split_cores
from onnxtax.serve.loadgen import LevelRun, latency_ms, run_level, send_lag_ms
from onnxtax.serve.options import PERCENTILES, ServeOptions
from onnxtax.serve.report import (ColdStart, Correctness, Curve, LevelResult, PathResult, ServeReport, Spread,
                                  evaluate_gates, qps_within)
from onnxtax.serve.wire import HEADER, REQUEST_ID

POOL = 64  # distinct request payloads, cycled
NODE_OPT_LEVELS = {"disable": "disabled", "basic": "basic", "extended": "extended", "all": "all"}
ENGINES = {"eager": ("python", "torch"), "ort": ("python", "ort"), "node": ("node", "ort")}
DRAIN_S = 1.0
SHARED_NOTE = 0.1  # other processes' share of the hosts' cores worth a note
FLOOR_NEAR = 0.8  # a path within this share of its host's no-op ceiling may be measuring the generator


# --------------------------------------------------------------------------- inputs
def request_sizes(resolved, request_dims: dict[str, int]) -> tuple[str | None, dict[str, int]]:
    """(the batch axis, the size of every dynamic axis in one request: batch 1, others from
    request_dims, else their export size). Every input must lead with the batch axis."""
    from onnxtax.core.specs import symbols_of

    specs = resolved.specs
    firsts = {s.dims[0] if s.dims else None for s in specs}
    batch = next(iter(firsts)) if len(firsts) == 1 and isinstance(next(iter(firsts)), str) else None
    known = symbols_of(specs)
    for axis in request_dims:
        if axis not in known or axis == batch:
            raise InputSpecError(f"--dim {axis}: {'the batch axis is one row per request' if axis == batch else 'names no dynamic axis'}",
                                 f"other dynamic axes: {', '.join(a for a in known if a != batch) or 'none'}")
    sizes: dict[str, int] = {}
    for sym in known:
        if sym == batch:
            sizes[sym] = 1
        elif sym in request_dims:
            sizes[sym] = int(request_dims[sym])
        elif sym in resolved.export_sizes:
            sizes[sym] = int(resolved.export_sizes[sym])
        else:
            raise InputSpecError(f"no request size for dynamic axis '{sym}'", f"give one with --dim {sym}=N")
    return batch, sizes


def _payloads(specs, sizes, recipe) -> list[bytes]:
    import numpy as np

    from onnxtax.core.specs import make_inputs

    out = []
    for k in range(POOL):
        arrays = make_inputs(specs, sizes, recipe, k)
        out.append(b"".join(np.ascontiguousarray(arrays[s.name]).tobytes() for s in specs))
    return out


# --------------------------------------------------------------------------- one level
def summarize(run: LevelRun, slo_key: str, slo_ms: float) -> LevelResult:
    import numpy as np

    lat = latency_ms(run)
    finite = lat[np.isfinite(lat)]
    keys = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p999": 99.9}
    values = np.percentile(lat, list(keys.values()), method="higher") if lat.size else [math.inf] * len(keys)
    latency = {k: float(v) for k, v in zip(keys, values)}
    latency["max"] = float(lat.max()) if lat.size else math.inf
    latency["mean"] = float(finite.mean()) if finite.size else math.inf
    lag = send_lag_ms(run)
    batches = np.asarray(run.batch_sizes or [0])
    cores = (lambda cpu: cpu / run.wall_s if cpu is not None and run.wall_s > 0 else None)
    mem = run.memory or {}
    met = run.aborted_at_s is None and latency[slo_key.replace(".", "")] <= slo_ms
    return LevelResult(run.offered, int(lat.size), int(finite.size), finite.size / run.window_s if run.window_s else 0.0,
                       latency, bool(met), run.aborted_at_s, False,
                       float(np.percentile(lag, 99)) if lag.size else None, float(batches.mean()), int(batches.max()),
                       cores(run.host_cpu_s), cores(run.other_cpu_s), cores(run.generator_cpu_s),
                       mem["rss"] / 1e6 if mem.get("rss") else None, mem["pss"] / 1e6 if mem.get("pss") else None)


class Ramp:
    """One curve: a host group kept running across its levels (restarted when a backlog did not clear)."""

    def __init__(self, start_group: Callable[[], HostGroup], payloads: list[bytes], opts: ServeOptions,
                 say: Callable[[str], None]):
        self.start_group, self.payloads, self.opts, self.say = start_group, payloads, opts, say
        self.group: HostGroup | None = None
        self.level_no = 0

    def level(self, rate: float) -> LevelResult:
        opts = self.opts
        first = self._once(rate)
        if first.slo_met:
            return first
        self.say(f"{rate:,.0f} rows/s missed {opts.slo}: measuring it again")
        second = self._once(rate)
        second.retried = True
        return second

    def _once(self, rate: float) -> LevelResult:
        opts = self.opts
        if self.group is None:
            self.group = self.start_group()
        self.level_no += 1
        pct = PERCENTILES[opts.slo_key]
        run = run_level(self.group, self.payloads, rate, duration_s=opts.duration_s, warmup_s=opts.warmup_s,
                        arrival=opts.arrival, seed=opts.seed, level=self.level_no, slo_ms=opts.slo_ms,
                        slo_percentile=pct, drain_s=DRAIN_S)
        if not run.settled:  # a backlog still being served would land in the next level
            self.close()
        return summarize(run, opts.slo_key, opts.slo_ms)

    def curve(self, policy: dict) -> Curve:
        opts = self.opts
        curve = Curve(policy)
        measured = curve.levels
        if opts.rates:
            for rate in sorted(set(opts.rates) | set(opts.gate_loads())):
                if any(not lv.slo_met and lv.offered_qps < rate for lv in measured) and rate not in opts.gate_loads():
                    continue  # a lower load already missed the SLO
                self.say(f"{rate:,.0f} rows/s")
                measured.append(self.level(rate))
            return curve
        rate = opts.start_rate
        low, high = None, None
        while len(measured) < opts.max_levels:
            self.say(f"{rate:,.0f} rows/s")
            lv = self.level(rate)
            measured.append(lv)
            if lv.slo_met:
                low = rate
                if high is not None:
                    break
                rate *= opts.growth
            else:
                high = rate
                if low is not None:
                    break
                rate /= opts.growth
                if rate < 1.0:
                    break
        for _ in range(opts.refine if low is not None and high is not None else 0):
            if len(measured) >= opts.max_levels:
                break
            rate = math.sqrt(low * high)  # type: ignore[operator]
            self.say(f"{rate:,.0f} rows/s (refining)")
            lv = self.level(rate)
            measured.append(lv)
            low, high = (rate, high) if lv.slo_met else (low, rate)
        for load in opts.gate_loads():
            if curve.level_at(load) is None:
                self.say(f"{load:,.0f} rows/s (a gate's load)")
                measured.append(self.level(load))
        return curve

    def close(self) -> None:
        if self.group is not None:
            self.group.close()
            self.group = None


# --------------------------------------------------------------------------- cold start
def cold_start_once(launch: Launch, cores: list[int], work: Path, payload: bytes) -> tuple[float, float, float]:
    """(ready s, first response s, peak RSS MB) of one fresh host process answering one request."""
    group = HostGroup(launch, 1, cores, work).start(warmup=False)
    try:
        conn = group.conns[0]
        conn.setblocking(True)
        conn.settimeout(600)
        conn.sendall(REQUEST_ID.pack(0) + payload)
        head = b""
        while len(head) < HEADER.size:
            chunk = conn.recv(HEADER.size - len(head))
            if not chunk:
                raise group.failure("closed the connection before its first response")
            head += chunk
        first = time.monotonic_ns()
        peak = group.memory().get("peak") or 0
        return (group.ready_ns - group.spawn_ns) / 1e9, (first - group.spawn_ns) / 1e9, peak / 1e6
    except socket.timeout:
        raise group.failure("gave no first response in 600 s") from None
    finally:
        group.close()


# --------------------------------------------------------------------------- main
def run_serve_bench(model: Any, onnx_path: str | Path, inputs: list[str] | None = None,
                    options: ServeOptions | None = None, *, progress: Progress | None = None,
                    **kwargs: Any) -> ServeReport:
    """Serve `onnx_path` (and the eager `model`, a SPEC string) under open-loop load on each path
    and policy; see the module docstring. `options` (ServeOptions) or its fields as keywords.
    Raises OnnxtaxError (exit 2) for unusable options, inputs, or a missing Node.js/npm install;
    what the hosts do (a failed batch, outputs that differ) is in the report (exit 1)."""
    from onnxtax.core.artifact import open_artifact
    from onnxtax.core.inputs import resolve_inputs
    from onnxtax.core.loading import check_inputs_match, resolve_model
    from onnxtax.core.reference import EagerReference
    from onnxtax.core.report import host_facts
    from onnxtax.core.specs import DTYPES, SampleRecipe, concrete_shape
    from onnxtax.serve.check import build_cases, compare, read_host_outputs
    from onnxtax.serve.node_env import ensure_node_env, resolve_cache_dir

    started = time.monotonic()
    opts = ServeOptions.build(options, **kwargs)
    say = progress or silent
    artifact = open_artifact(onnx_path)
    onnx_path = artifact.path
    resolved = resolve_inputs(artifact, inputs, ranges=opts.ranges)
    specs = resolved.specs
    for s in specs:
        if s.dtype == "bfloat16":
            raise InputSpecError(f"input '{s.name}' is bfloat16, which numpy cannot carry to the hosts",
                                 "serve a float32 or float16 export")
    batch_axis, sizes = request_sizes(resolved, opts.request_dims)
    if batch_axis is None and max(opts.max_batch) > 1:
        raise InputSpecError("the inputs do not all lead with one dynamic batch axis, so requests cannot be batched",
                             "use --max-batch 1, or export with a dynamic first axis shared by every input")
    for name in opts.tolerances:
        if name not in resolved.output_names:
            raise InputSpecError(f"--tolerance names '{name}', which is not an ONNX output",
                                 f"outputs: {', '.join(resolved.output_names)}")
    if model is None:
        raise InputSpecError("serve-bench needs the PyTorch model: the eager path and the reference",
                             "give SPEC (path/to/file.py:NAME)")
    loaded = resolve_model(model)
    from onnxtax.core.identity import check_model_matches

    check_model_matches(loaded.module, resolved.manifest, Path(onnx_path).name, loaded.spec or "the model")
    if loaded.in_memory and "eager" in opts.paths:
        raise InputSpecError("the eager path starts fresh processes, which can only build the model from a SPEC "
                             "string", "give path/to/file.py:NAME, or leave eager out of --paths")
    node_env = None
    if "node" in opts.paths:
        node_env = ensure_node_env(opts.node_ort, resolve_cache_dir(opts.node_dir), offline=opts.offline,
                                   node=opts.node, say=say)
    server_cores, generator_cores, shared = split_cores(opts.server_cores)
    notes = list(resolved.notes)
    if shared:
        notes.append("one usable core: the generator and the hosts share it, so every figure includes the "
                     "generator's own work")
    recipe = SampleRecipe(opts.seed, resolved.ranges)
    payloads = _payloads(specs, sizes, recipe)
    for s in specs:
        if not s.dims or concrete_shape(s, sizes)[0] != 1:
            raise InputSpecError(f"input '{s.name}' {list(s.dims)}: a request is one row, so every input needs a "
                                 "leading batch axis (dynamic, or 1)", "export with a dynamic batch axis")
    rows = [{"name": s.name, "onnx_name": resolved.onnx_names.get(s.name), "dtype": DTYPES[s.dtype][0],
             "row_shape": list(concrete_shape(s, sizes))[1:]} for s in specs]
    base = {"onnx": str(Path(onnx_path).resolve()), "spec": loaded.spec, "inputs": rows,
            "payload_bytes": len(payloads[0]), "intra_op_threads": opts.intra_op_threads,
            "opt_level": ORT_OPT_LEVELS[opts.opt_level], "node_opt_level": NODE_OPT_LEVELS[opts.opt_level]}
    env: dict[str, str] = {}
    target = (loaded.spec or "").rpartition(":")[0]
    if loaded.spec and not (target.endswith(".py") or "/" in target or "\\" in target):
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)  # a package.module spec resolves as here

    def launch(path: str, engine: str, language: str, policy: dict) -> Launch:
        cfg = dict(base, engine=engine, policy={k: policy[k] for k in ("max_batch", "max_wait_ms")},
                   threads=policy["threads"])
        return Launch(path, language, cfg, node_env.node if node_env else None,
                      str(node_env.node_path) if node_env else None, env)

    policies = opts.policies()
    floors = (["python"] + (["node"] if "node" in opts.paths else [])) if opts.generator_floor else []
    total = len(opts.paths) * len(policies) + len(floors) + opts.cold_start_runs * len(opts.paths)
    step = [0]

    def stage(text: str) -> Callable[[str], None]:
        def tell(message: str) -> None:
            say(f"{text}: {message}", step[0], total)
        return tell

    report = ServeReport(str(onnx_path), loaded.spec, specs, resolved.source,
                         {"shapes": {s.name: list(concrete_shape(s, sizes)) for s in specs},
                          "payload_bytes": len(payloads[0]), "pool": POOL},
                         {"percentile": opts.slo_key, "ms": opts.slo_ms},
                         {"arrival": opts.arrival, "duration_s": opts.duration_s, "warmup_s": opts.warmup_s,
                          "rates": opts.rates, "start_rate": opts.start_rate, "growth": opts.growth,
                          "refine": opts.refine, "policies": policies, "workers": opts.workers,
                          "intra_op_threads": opts.intra_op_threads, "opt_level": opts.opt_level,
                          "seed": opts.seed, "price_per_hour": opts.price_per_hour,
                          "node": node_env.to_dict() if node_env else None},
                         {"cpu_count": os.cpu_count(), "server": server_cores, "generator": generator_cores,
                          "shared": shared}, notes=notes)
    work = Path(tempfile.mkdtemp(prefix="onnxtax-serve-"))
    try:
        with pinned(generator_cores):
            cases = None
            if "ort" in opts.paths or "node" in opts.paths:
                say("computing the eager model's outputs for the hosts' check")
                module = check_inputs_match(loaded.module.eval(), specs, loaded.spec or "the model")
                cases = build_cases(EagerReference(module, specs, resolved.ranges), resolved, recipe, opts, work)
                module = None
            for path_id in opts.paths:
                language, engine = ENGINES[path_id]
                result = PathResult(path_id, language, "torch" if path_id == "eager" else "ort",
                                    opts.workers if path_id == "eager" else 1)
                result.correctness = Correctness("reference" if path_id == "eager" else "not_run")
                report.paths.append(result)
                for pi, policy in enumerate(policies):
                    step[0] += 1
                    tell = stage(f"{path_id} ({_policy_text(policy)})")
                    check_cfg = cases.host_config(work, path_id) if cases is not None and path_id != "eager" \
                        and pi == 0 else None
                    lau = launch(path_id, engine, language, policy)

                    def start(lau=lau, check_cfg=check_cfg) -> HostGroup:
                        group = HostGroup(lau, result.processes, server_cores, work)
                        group.start(check=check_cfg)
                        result.versions = result.versions or group.versions()
                        return group

                    ramp = Ramp(start, payloads, opts, tell)
                    try:
                        tell("starting the host")
                        ramp.group = start()
                        if check_cfg is not None:
                            assert cases is not None
                            result.correctness = compare(path_id, cases, read_host_outputs(check_cfg))
                            check_cfg = None
                        result.curves.append(ramp.curve(policy))
                    except HostFailed as exc:
                        result.status, result.reason = "failed", exc.message
                        break
                    finally:
                        ramp.close()
            for language in floors:
                step[0] += 1
                policy = {"max_batch": max(opts.max_batch), "max_wait_ms": min(opts.max_wait_ms)
                          if max(opts.max_batch) > 1 else 0.0, "threads": 1}
                floor_id = f"noop:{language}"
                lau = launch(floor_id, "noop", language, policy)
                ramp = Ramp(lambda lau=lau: HostGroup(lau, 1, server_cores, work).start(), payloads, opts,
                            stage(f"generator floor ({floor_id})"))
                try:
                    curve = ramp.curve(policy)
                finally:
                    ramp.close()
                report.generator.append({"id": floor_id, "host": language, "policy": policy,
                                         "qps_at_slo": curve.qps_at_slo,
                                         "saturated": any(not lv.slo_met for lv in curve.levels),
                                         "levels": curve.to_dict()["levels"]})
            _cold_starts(report, opts, launch, policies[0], server_cores, work, payloads[0], stage, step)
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    _finish(report, opts, server_cores)
    report.host = host_facts()
    report.duration_s = time.monotonic() - started
    say("done", total, total)
    return report


def _policy_text(policy: dict) -> str:
    from onnxtax.serve.report import fmt_policy

    return fmt_policy(policy)


def _cold_starts(report: ServeReport, opts: ServeOptions, launch, policy: dict, cores: list[int], work: Path,
                 payload: bytes, stage, step: list[int]) -> None:
    """Fresh processes, interleaved path by path, each to its first response (one process per
    path: with --workers each worker pays the same)."""
    measured = [p for p in report.paths if p.status == "measured"]
    rows: dict[str, list[tuple[float, float, float]]] = {p.id: [] for p in measured}
    for run in range(opts.cold_start_runs):
        for p in measured:
            step[0] += 1
            stage(f"cold start {p.id}")(f"fresh process {run + 1} of {opts.cold_start_runs}")
            language, engine = ENGINES[p.id]
            try:
                rows[p.id].append(cold_start_once(launch(p.id, engine, language, policy), cores, work, payload))
            except HostFailed as exc:
                p.status, p.reason = "failed", exc.message
    for p in measured:
        if rows[p.id]:
            p.cold_start = ColdStart(Spread([r[0] for r in rows[p.id]]), Spread([r[1] for r in rows[p.id]]),
                                     Spread([r[2] for r in rows[p.id]]))


def _finish(report: ServeReport, opts: ServeOptions, server_cores: list[int]) -> None:
    """Cost per 1,000 predictions, notes on the generator's floor, and the gates."""
    cpu_count = report.cores["cpu_count"] or 1
    for p in report.paths:
        qps = p.qps_at_slo
        if opts.price_per_hour is not None and qps:
            share = len(server_cores) / cpu_count
            p.cost_per_1000 = opts.price_per_hour * share / (qps * 3600.0) * 1000.0
        floor = next((g for g in report.generator if g["host"] == p.host), None)
        if qps and floor and floor["saturated"] and floor["qps_at_slo"] and qps >= FLOOR_NEAR * floor["qps_at_slo"]:
            report.notes.append(f"{p.id}: {qps:,.0f} rows/s is {qps / floor['qps_at_slo']:.0%} of what the generator "
                                f"sustained with a {p.host} host that computes nothing ({floor['qps_at_slo']:,.0f}): "
                                "this figure may be bounded by the generator (or the floor by a busy machine), "
                                "not by the path")
        busy = [lv.other_cores for c in p.curves for lv in c.levels if lv.other_cores is not None]
        if busy and max(busy) > SHARED_NOTE:
            report.notes.append(f"{p.id}: other processes took up to {max(busy):.2f} of the hosts' cores during its "
                                "levels (a shared machine): its figures are lower than this host alone would give")
        for c in p.curves:
            late = [lv for lv in c.levels if lv.send_lag_p99_ms is not None and lv.slo_met
                    and lv.send_lag_p99_ms > 0.1 * opts.slo_ms]
            if late:
                report.notes.append(f"{p.id}: the generator sent {len(late)} level(s) more than 10% of the SLO late "
                                    "at p99 (a busy machine?); the lateness is counted in the latency")
                break
    report.gates = evaluate_gates(report, opts.min_qps_at_slo, opts.max_p99_ms)


__all__ = ["run_serve_bench", "request_sizes", "summarize", "qps_within"]
