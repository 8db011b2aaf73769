"""FP32 parity of an ONNX artifact against its eager PyTorch source, on every
configured execution provider, at several sizes of every dynamic axis.

Exit code 0 of `onnxtax parity` means: on these providers, at these shapes, on these
samples, every output was compared and the artifact computes what the source model
computes, within tolerance (onnxtax.core.compare: atol scaled by each output's RMS, a cosine
gate, and constant outputs "not compared" unless allowed).
The exporter's own checks (onnx.checker, torch's `verify=True`) compare against the
exported program at the example input only; the failures that matter (a size baked
in at export, a data-dependent branch frozen by tracing) show up only at other
shapes and other values, against the eager model.

Defaults, measured here (torch 2.13, ORT 1.31, onnxruntime-openvino 1.24 on CPU) on
MLP, CNN, LSTM/GRU and 2-4 layer Transformer encoders exported by both exporters,
inputs at scales 0.1, 1 and 10: the worst drift needed atol 3.3e-6 at rtol 1e-4
(max abs diff 7.5e-6 on outputs of magnitude 2). A 1e-3 relative change in one
weight moves outputs by about 1e-3 relative. Hence rtol=1e-4, atol=1e-5 (times the
output's RMS at that shape): about 3x headroom over real FP32 drift, 10x below a real
change (docs/parity.md has the headroom measured on the examples and tiny transformers).
Integer and bool outputs must match exactly unless a per-output tolerance names them.

Shapes and samples: onnxtax.parity.shapes. The report and its JSON schema: onnxtax.parity.report.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

# re-exported: the names scripts and tests import from onnxtax.parity.run
from onnxtax.core.compare import (Constancy, OutputStats, Worst, compare_arrays, default_tolerance,  # noqa: F401
                             rms)
from onnxtax.core.errors import CheckFailed, InputSpecError
from onnxtax.core.inputs import ResolvedInputs
from onnxtax.parity.report import (SCHEMA, CaseResult, CaseStatus, ParityReport, ProviderResult,  # noqa: F401
                                   ProviderStatus, _fallback_reason, placement_text)
from onnxtax.core.progress import Progress
from onnxtax.core.providers import ProviderRequest, ort_error_summary
from onnxtax.core.reference import EagerReference, refuse_nondeterministic
from onnxtax.parity.shapes import (ShapePlan, check_run, default_axis_values, plan_assumed, plan_data_file,  # noqa: F401
                            plan_shapes, sample_inputs)
from onnxtax.core.manifest import assumed_text
from onnxtax.core.specs import (InputSpec, SampleRecipe, ValueRange, concrete_shape, export_sizes as default_export_sizes,
                           is_integer, make_inputs, symbols_of)
from onnxtax.core.defaults import OPT_LEVEL, PARITY_SEED
from onnxtax.core.defaults import PARITY_ATOL as DEFAULT_ATOL
from onnxtax.core.defaults import PARITY_ASSUMED_SIZE_CAP as ASSUMED_SIZE_CAP
from onnxtax.core.defaults import PARITY_MAX_SHAPES as MAX_SHAPES
from onnxtax.core.defaults import PARITY_MIN_COSINE as DEFAULT_MIN_COSINE
from onnxtax.core.defaults import PARITY_RTOL as DEFAULT_RTOL
from onnxtax.core.defaults import PARITY_SAMPLES as DEFAULT_SAMPLES
from onnxtax.core.defaults import LOCALIZE_MEMORY_MB, LOCALIZE_TIME_BUDGET_S
from onnxtax.core.defaults import MEMORY_FACTORS, PARITY_SHARE_MIN_BYTES, PARITY_SHARE_WEIGHTS

SHARE_WEIGHTS_MODES = ("auto", "always", "never")


# --------------------------------------------------------------------------- inputs and shapes


def parse_tolerances(texts: Sequence[str]) -> dict[str, tuple[float, float]]:
    """`--tolerance logits=1e-3:1e-4` -> {"logits": (1e-3, 1e-4)}."""
    out: dict[str, tuple[float, float]] = {}
    for text in texts:
        name, sep, value = text.partition("=")
        rtol_text, sep2, atol_text = value.partition(":")
        try:
            pair = (float(rtol_text), float(atol_text))
        except ValueError:
            pair = None
        if not sep or not sep2 or not name.strip() or pair is None or min(pair) < 0 or not all(
                map(math.isfinite, pair)):
            raise InputSpecError(f"--tolerance '{text}' needs OUTPUT=RTOL:ATOL with non-negative numbers",
                                 "e.g. --tolerance logits=1e-3:1e-4")
        out[name.strip()] = pair
    return out


# --------------------------------------------------------------------------- ONNX side


@dataclass
class _Session:
    result: ProviderResult
    session: Any


def _open_session(onnx_path: Path, req: ProviderRequest, shared: Any, **kwargs) -> Any:
    """A session on the eager model's weights for the CPU provider when they are shared, else from the file."""
    from onnxtax.core.providers import open_session

    if shared is not None and req.name == "CPUExecutionProvider":
        return shared.open(req, **kwargs)
    return open_session(onnx_path, req, **kwargs)


def _weights_to_share(module: Any, onnx_path: Path, mode: str, requests: list[ProviderRequest]) -> Any:
    """SharedWeights for the CPU session, or None: mode never, no CPU provider, or (auto) small weights.
    Other providers compile or copy weights into their own memory: they load the file."""
    if mode == "never" or not any(r.name == "CPUExecutionProvider" for r in requests):
        return None
    from onnxtax.core.weights import share_weights, stored_weight_bytes

    try:
        if mode == "auto" and stored_weight_bytes(onnx_path) < PARITY_SHARE_MIN_BYTES:
            return None
        shared = share_weights(onnx_path, module)
    except (OSError, ValueError):  # a proto the wire walker cannot read: the session loads the file
        return None
    return shared if shared.names else None


def _check_memory(meter: Any, onnx_path: Path, mode: str, requests: list[ProviderRequest]) -> None:
    """The preflight, before the model is loaded: the CPU session shares the weights as
    _weights_to_share decides; every other provider's session holds its own copy."""
    from onnxtax.core.memory import onnx_weights_bytes

    weights = onnx_weights_bytes(onnx_path)
    cpu = any(r.name == "CPUExecutionProvider" for r in requests)
    shares = cpu and (mode == "always" or (mode == "auto" and (weights or 0) >= PARITY_SHARE_MIN_BYTES))
    others = sum(1 for r in requests if r.name != "CPUExecutionProvider")
    meter.check(weights, "parity" if shares else "parity-unshared",
                extra_factor=others * MEMORY_FACTORS["parity-provider"])


def _open_sessions(onnx_path: Path, requests: list[ProviderRequest], *, opt_level: str, threads: int | None,
                   shared: Any = None) -> list[_Session | ProviderResult]:
    from onnxtax.core.providers import placement_of

    out: list[_Session | ProviderResult] = []
    for req in requests:
        pr = ProviderResult(req)
        t0 = time.perf_counter()
        try:
            session = _open_session(onnx_path, req, shared, opt_level=opt_level, threads=threads,
                                    record_placement=True)
        except CheckFailed as exc:
            line, node = ort_error_summary(exc.__cause__ or exc)
            pr.status = "error"
            pr.reason = f"session could not load: {line}" + (f" (node {node})" if node else "")
            out.append(pr)
            continue
        pr.session_load_s = time.perf_counter() - t0
        pr.placement = placement_of(session, req.name)
        out.append(_Session(pr, session))
    return out


# --------------------------------------------------------------------------- the check


def check_parity(model: Any, onnx_path: str | Path, inputs: Sequence[str | InputSpec] | ResolvedInputs | None = None,
                 *,
                 dims: dict[str, list[int]] | None = None, samples: int = DEFAULT_SAMPLES, seed: int = PARITY_SEED,
                 ranges: dict[str, ValueRange | tuple[float, float]] | None = None,
                 data_files: Sequence[str | Path] | None = None,
                 rtol: float = DEFAULT_RTOL, atol: float = DEFAULT_ATOL,
                 tolerances: dict[str, tuple[float, float]] | None = None,
                 min_cosine: float | None = DEFAULT_MIN_COSINE, allow_constant: Sequence[str] = (),
                 test_assumed: bool = True,
                 providers: Sequence[str | ProviderRequest] | None = None, skip_unavailable: bool = False,
                 fail_on_fallback: bool = False, opt_level: str = OPT_LEVEL, threads: int | None = None,
                 max_shapes: int = MAX_SHAPES, share_weights: str = PARITY_SHARE_WEIGHTS,
                 progress: Progress | None = None, localize: bool = False,
                 localize_budget_s: float = LOCALIZE_TIME_BUDGET_S,
                 localize_memory_mb: float = LOCALIZE_MEMORY_MB) -> ParityReport:
    """Compare the ONNX model with the eager source on every provider, shape and sample.

    Args:
        model: a spec string (`path/to/file.py:NAME`), a LoadedModel or an nn.Module.
        onnx_path: the exported model.
        inputs: `NAME:DIMS[:DTYPE]` strings or InputSpecs, in forward() order, or ResolvedInputs;
            default: the manifest beside the model, else the ONNX graph's inputs (inputs.resolve_inputs).
        dims: sizes per dynamic axis, e.g. {"batch": [1, 8, 33]}; default 1, an even and an odd size.
        samples: random samples per shape. ranges: value range per input (integers: high exclusive).
        data_files: `.npz` files, arrays keyed by input name, one batch each.
        rtol, atol: default tolerance, |a-b| <= atol*rms + rtol*|b| with rms the source output's RMS at
            that shape; tolerances: per ONNX output name, (rtol, atol).
        min_cosine: similarity gate per sample of a float output (None: off).
        allow_constant: outputs that may be the same for every input (else "not compared" fails them).
        test_assumed: add sizes just outside every range torch.export assumed (from the manifest).
        providers: names (`cpu`, `openvino:device_type=CPU`) or ProviderRequests; default every
            compute provider on this host.
        fail_on_fallback: any node ORT places on another provider fails that provider.
        share_weights: auto, always or never: the CPU session takes the initializers whose bytes equal
            the eager model's parameters from the model's own memory instead of the file (weights
            in memory once; auto: from PARITY_SHARE_MIN_BYTES of weights; see onnxtax.core.weights).
        progress: a Progress, called as progress(description, done, total).
        localize: on failure, find each failing provider's first divergent module, node and
            source line (onnxtax.parity.localize), within `localize_budget_s` seconds in all, holding at
            most `localize_memory_mb` of intermediate values at a time.

    Raises OnnxtaxError (exit 2) for unusable inputs, unknown/unavailable providers and a
    non-deterministic source. Failures of the artifact are in the report, never raised.
    """
    t_start = time.perf_counter()
    onnx_path = Path(onnx_path)
    check_run(samples, data_files, opt_level, rtol, atol)
    if threads is not None and threads < 0:
        raise InputSpecError(f"--threads {threads}: must be 0 (ORT's choice) or more", "e.g. --threads 2")
    if min_cosine is not None and not -1.0 <= min_cosine <= 1.0:
        raise InputSpecError(f"--min-cosine {min_cosine:g} is not a cosine", "give a number in [-1, 1], e.g. 0.999")
    if max_shapes < 1:
        raise InputSpecError("max_shapes must be at least 1", "e.g. --max-shapes 9")
    if not localize_budget_s > 0 or not localize_memory_mb > 0:
        raise InputSpecError(f"--localize-budget {localize_budget_s:g} / --localize-memory {localize_memory_mb:g}: "
                             "both must be > 0", "e.g. --localize-budget 120 --localize-memory 512")
    if share_weights not in SHARE_WEIGHTS_MODES:
        raise InputSpecError(f"unknown --share-weights '{share_weights}'",
                             f"use one of: {', '.join(SHARE_WEIGHTS_MODES)}")

    from onnxtax.core.inputs import resolve_inputs
    from onnxtax.core.loading import check_inputs_match, resolve_model
    from onnxtax.core.memory import StageMeter
    from onnxtax.core.providers import resolve_providers

    meter = StageMeter("parity")
    resolved = resolve_inputs(onnx_path, inputs, ranges=ranges)
    requests, skipped = resolve_providers(providers, skip_unavailable=skip_unavailable)
    _check_memory(meter, onnx_path, share_weights, requests)
    loaded = resolve_model(model)
    module = check_inputs_match(loaded.module, resolved.specs, loaded.spec)
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        report = _run(module, None if loaded.in_memory else loaded.spec, onnx_path, resolved, dims=dims,
                      samples=samples, seed=seed, data_files=data_files, rtol=rtol, atol=atol,
                      tolerances=tolerances or {}, min_cosine=min_cosine, allow_constant=list(allow_constant),
                      test_assumed=test_assumed, requests=requests,
                      skipped=skipped, fail_on_fallback=fail_on_fallback, opt_level=opt_level, threads=threads,
                      max_shapes=max_shapes, share_weights=share_weights, progress=progress, t_start=t_start,
                      localize=(localize_budget_s, localize_memory_mb) if localize else None)
        report.memory = meter.record()
        return report
    finally:
        for m, was_training in flags:
            m.training = was_training


def _run(module: Any, spec_text: str | None, onnx_path: Path, resolved: ResolvedInputs, *, dims, samples, seed,
         data_files, rtol, atol, tolerances, min_cosine, allow_constant, test_assumed, requests, skipped,
         fail_on_fallback, opt_level, threads, max_shapes, share_weights, progress, t_start, localize=None) -> ParityReport:
    from onnxtax.core.manifest import assumed_ranges_of
    from onnxtax.core.report import package_versions

    specs = resolved.specs
    report = ParityReport(str(onnx_path), spec_text, type(module).__name__, input_source=resolved.source,
                          inputs=resolved.to_dicts(), export_sizes=dict(resolved.export_sizes), rtol=rtol,
                          atol=atol, per_output=dict(tolerances), min_cosine=min_cosine,
                          allow_constant=list(allow_constant), seed=seed, samples_per_shape=samples,
                          notes=list(resolved.notes),
                          settings={"fail_on_fallback": fail_on_fallback, "opt_level": opt_level,
                                    "threads": threads, "max_shapes": max_shapes, "test_assumed": test_assumed,
                                    "assumed_size_cap": ASSUMED_SIZE_CAP, "share_weights": share_weights,
                                    "localize": localize is not None},
                          versions=package_versions())
    output_names = resolved.output_names
    for name, pair in tolerances.items():
        if name not in output_names:
            raise InputSpecError(f"--tolerance names '{name}', which is not an ONNX output",
                                 f"outputs: {', '.join(output_names)}")
        if len(pair) != 2 or not all(math.isfinite(v) and v >= 0 for v in pair):
            raise InputSpecError(f"tolerance of '{name}' is {pair}: need (rtol, atol), finite and non-negative",
                                 "e.g. --tolerance logits=1e-3:1e-4")
    for name in allow_constant:
        if name not in output_names:
            raise InputSpecError(f"--allow-constant names '{name}', which is not an ONNX output",
                                 f"outputs: {', '.join(output_names)}")
    defaults = [f"{s.name}: {SampleRecipe(seed, resolved.ranges).describe(s)}" for s in specs
                if is_integer(s) and s.name not in resolved.ranges]
    if defaults and samples:
        report.notes.append("integer inputs without --range are drawn from name-based defaults: " + "; ".join(defaults))
    export_sizes = resolved.export_sizes
    plans = plan_shapes(specs, dims, export_sizes, samples=samples, joint=resolved.source == "onnx-graph",
                        max_shapes=max_shapes) if samples else []
    assumed = {sym: r for sym, r in assumed_ranges_of(resolved.manifest).items() if sym in set(symbols_of(specs))}
    report.assumed_ranges = assumed
    if samples and assumed:
        if test_assumed:
            plans += plan_assumed(plans, assumed, specs, export_sizes, samples=samples, notes=report.notes)
        else:
            report.notes.append("torch.export assumed " + "; ".join(assumed_text(s, r) for s, r in assumed.items())
                                + " at export; sizes outside are not tested (--no-test-assumed)")
    plans += [plan_data_file(f, specs) for f in data_files or []]
    report.shapes = plans

    shared = _weights_to_share(module, onnx_path, share_weights, requests)
    if shared is not None:
        report.weights = shared.sharing.to_dict()
        report.notes.append(shared.sharing.note())
    opened = _open_sessions(onnx_path, requests, opt_level=opt_level, threads=threads, shared=shared)
    live = [o for o in opened if isinstance(o, _Session)]
    report.providers = [o.result if isinstance(o, _Session) else o for o in opened]
    for req in skipped:
        report.providers.append(ProviderResult(req, "skipped", "skipped: not available on this host"))
    for pr in report.providers:
        if pr.status == "error":
            report.failures.append(f"{pr.label}: {pr.reason}")
        if fail_on_fallback and pr.placement is not None and (pr.placement.fell_back
                                                              or pr.placement.method == "unavailable"):
            pr.status = "failed"
            pr.reason = _fallback_reason(pr)
            report.failures.append(pr.reason)
    if not requests:
        report.model_failures.append("no provider ran: every requested provider was skipped, nothing was compared")
        report.failures.append(report.model_failures[-1])
    if not live:
        report.duration_s = time.perf_counter() - t_start
        return report

    value_ranges = resolved.ranges
    recipe = SampleRecipe(seed, value_ranges)
    source = EagerReference(module, specs, value_ranges)
    comparison = _Comparison(live, output_names, rtol, atol, tolerances, min_cosine)
    constancy = [Constancy() for _ in output_names]
    total = sum(p.samples for p in plans) * (1 + len(live))
    done = 0
    # determinism is checked on the first sample and again at the largest shape: dropout left on
    # can leave a one-element output unchanged by chance, rarely a large one
    largest = max(range(len(plans)), key=lambda i: math.prod(plans[i].sizes.values()), default=0)
    fallback_sizes = {**default_export_sizes(specs), **export_sizes}
    pi = 0
    while pi < len(plans):
        plan = plans[pi]
        # the source first, every sample of this shape: the output's scale at this shape sets its tolerance
        computed: list[tuple[dict, list]] = []
        for k in range(plan.samples):
            arrays = sample_inputs(plan, specs, recipe, k)
            where = f"{plan.label} sample {k}"
            try:
                expected = source(arrays, where, plan.file)
            except InputSpecError:
                if k > 0 or not _adapt_plan(plans, pi, source, specs, recipe, fallback_sizes, dims or {},
                                            report.notes):
                    raise
                break
            if k == 0 and pi == largest and done > 0:
                refuse_nondeterministic(source, arrays, where, expected)
            if done == 0:
                mismatch = _first_sample_checks(source, arrays, where, expected, output_names, report)
                if mismatch:
                    report.model_failures.append(mismatch)
                    report.failures.append(mismatch)
                    for s in live:
                        s.result.status, s.result.reason = "failed", mismatch
                    report.duration_s = time.perf_counter() - t_start
                    return report
            done += 1
            _tick(progress, done, total, where)
            computed.append((arrays, expected))
        if len(computed) < plan.samples:  # the plan was replaced or dropped: look at index pi again
            largest = max(range(len(plans)), key=lambda i: math.prod(plans[i].sizes.values()), default=0)
            continue
        comparison.scales[pi] = [rms([e[oi] for _, e in computed]) for oi in range(len(output_names))]
        for _, expected in computed:
            for oi, arr in enumerate(expected[:len(output_names)]):
                constancy[oi].add(plan.label, arr)
        for k, (arrays, expected) in enumerate(computed):
            where = f"{plan.label} sample {k}"
            feeds = resolved.feeds(arrays)
            for si in range(len(live)):
                comparison.run(si, pi, k, plan, feeds, expected)
                done += 1
                _tick(progress, done, total, where)
        pi += 1
    report.shapes = plans

    for s in live:
        s.session = None  # every case ran: the fresh sessions below and localisation's need the memory more
    comparison.recheck_in_fresh_sessions(plans, lambda plan, k: sample_inputs(plan, specs, recipe, k), source, resolved,
                                         onnx_path, opt_level=opt_level, threads=threads, shared=shared)
    constant = {output_names[oi]: c.describe() for oi, c in enumerate(constancy) if c.constant}
    for name, entry in zip(output_names, report.outputs):
        entry["constant"] = name in constant
        entry["constant_allowed"] = name in constant and name in allow_constant
    comparison.collect(report, plans, constant, allow_constant)
    changed = shared.changed() if shared is not None else []
    if changed:  # the CPU session read them in place: what it computed is not the file's model
        problem = (f"the eager model changed {len(changed)} shared weight(s) in place while parity ran "
                   f"({', '.join(changed[:3])}): the CPU session read the changed values, not the file's; "
                   "rerun with --share-weights never")
        report.model_failures.append(problem)
        report.failures.append(problem)
    if localize is not None and not report.passed:
        from onnxtax.parity.localize import localize_failures

        budget_s, memory_mb = localize
        localize_failures(report, module, onnx_path, plans, lambda plan, k: sample_inputs(plan, specs, recipe, k), specs,
                          resolved.onnx_names, opt_level=opt_level, threads=threads, memory_budget_mb=memory_mb,
                          time_budget_s=budget_s, progress=progress,
                          shared_weights=None if changed else shared)  # changed: the file's values, from the file
    report.duration_s = time.perf_counter() - t_start
    return report


def _adapt_plan(plans: list[ShapePlan], pi: int, source: EagerReference, specs: list[InputSpec], recipe: SampleRecipe,
                known_good: dict[str, int], user_dims: dict[str, list[int]], notes: list[str]) -> bool:
    """The eager model rejects plans[pi]'s sizes: replace them with sizes it accepts, as export's
    smoke run does, or drop a plan just outside an assumed range. Axes sized by the user (--dim)
    are not changed. Returns False when nothing could be done (the caller re-raises)."""
    plan = plans[pi]
    if plan.origin == "data":
        return False
    others = {tuple(sorted(p.sizes.items())) for i, p in enumerate(plans) if i != pi}
    if plan.origin == "assumed":
        notes.append(f"the source model itself fails at {plan.label}, just outside the range torch.export assumed "
                     f"({plan.assumption}): the range is the model's own limit; not tested there")
        del plans[pi]
        return True
    free = [sym for sym in plan.sizes if sym not in user_dims]
    if not free:
        return False

    def runs(sizes: dict[str, int]) -> bool:
        return source.error_at(make_inputs(specs, sizes, recipe, 0)) is None

    trial = {sym: (plan.sizes[sym] if sym in user_dims else known_good.get(sym, plan.sizes[sym]))
             for sym in plan.sizes}
    for sym in free:
        e = known_good.get(sym, plan.sizes[sym])
        for value in dict.fromkeys([plan.sizes[sym], e + 1, e + 2, 2 * e + 1, 2 * e, max(1, e - 1), e]):
            if runs({**trial, sym: value}):
                trial[sym] = value
                break
    if not runs(trial):
        return False
    new_label = ",".join(f"{k}={v}" for k, v in trial.items())
    if tuple(sorted(trial.items())) in others:
        notes.append(f"the source model itself fails at {plan.label}; the nearest sizes it accepts ({new_label}) "
                     "are tested already")
        del plans[pi]
        return True
    notes.append(f"the source model itself fails at {plan.label}: tested {new_label} instead")
    plans[pi] = ShapePlan(new_label, trial, plan.samples, plan.origin, None,
                          {s.name: list(concrete_shape(s, trial)) for s in specs}, plan.assumption)
    return True


def _first_sample_checks(source: EagerReference, arrays: dict, where: str, expected: list, output_names: list[str],
                         report: ParityReport) -> str | None:
    """Refuse a non-deterministic source; match outputs. Returns a count-mismatch failure, if any."""
    refuse_nondeterministic(source, arrays, where, expected)
    report.outputs = [{"name": n, "source_path": p}
                      for n, p in itertools.zip_longest(output_names, source.paths or [])]
    if len(expected) == len(output_names):
        return None
    paths = ", ".join(source.paths or []) or "none"
    return (f"outputs: the source returns {len(expected)} tensors ({paths}), the ONNX model has "
            f"{len(output_names)} ({', '.join(output_names)}); they cannot be matched")


class _Comparison:
    """Running statistics per (provider, shape, output); one ORT run at a time, no arrays kept."""

    def __init__(self, live: list[_Session], output_names: list[str], rtol: float, atol: float,
                 tolerances: dict[str, tuple[float, float]], min_cosine: float | None):
        self.live, self.output_names = live, output_names
        self.rtol, self.atol, self.tolerances, self.min_cosine = rtol, atol, tolerances, min_cosine
        self.scales: dict[int, list[float]] = {}  # shape index -> RMS of each source output there
        self.stats: dict[tuple[int, int, int], OutputStats] = {}
        self.run_errors: dict[tuple[int, int], str] = {}
        self.error_sample: dict[tuple[int, int], int] = {}
        self.run_time: dict[tuple[int, int], float] = {}
        self.fresh_notes: dict[tuple[int, int], str] = {}  # failures a fresh session does not reproduce

    def run(self, si: int, pi: int, k: int, plan: ShapePlan, feeds: dict, expected: list) -> None:
        """Sample k of shape pi on provider si; after a run error that shape is not retried there."""
        if (si, pi) in self.run_errors:
            return
        t0 = time.perf_counter()
        try:
            got = self.live[si].session.run(None, feeds)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own pybind types
            line, node = ort_error_summary(exc)
            self.run_errors[(si, pi)] = (f"ONNX Runtime failed to run at {plan.label}: {line}"
                                         + (f" (node {node})" if node else ""))
            self.error_sample[(si, pi)] = k
            return
        self.run_time[(si, pi)] = self.run_time.get((si, pi), 0.0) + time.perf_counter() - t0
        for oi, (a, b) in enumerate(zip(got, expected)):
            acc = self.stats.get((si, pi, oi))
            if acc is None:
                r, t = self.tolerances.get(self.output_names[oi], default_tolerance(b, self.rtol, self.atol))
                acc = self.stats[(si, pi, oi)] = OutputStats(r, t, self.min_cosine)
            acc.update(a, b, sample=k, scale=self.scales.get(pi, [None] * (oi + 1))[oi])

    def failing_shapes(self, si: int, n_plans: int) -> list[tuple[int, int]]:
        """(shape index, sample) of each shape where provider si failed, with the sample to replay."""
        out = []
        for pi in range(n_plans):
            if (si, pi) in self.run_errors:
                out.append((pi, self.error_sample[(si, pi)]))
                continue
            bad = [self.stats[(si, pi, oi)] for oi in range(len(self.output_names))
                   if (si, pi, oi) in self.stats and not self.stats[(si, pi, oi)].passed]
            if bad:
                worst = bad[0].worst
                out.append((pi, worst.sample if worst is not None else 0))
        return out

    def recheck_in_fresh_sessions(self, plans: list[ShapePlan], sample_of: Callable, source: EagerReference,
                                  resolved: ResolvedInputs, onnx_path: Path, *, opt_level: str,
                                  threads: int | None, shared: Any = None, limit: int = 2) -> None:
        """Replay a failing shape in a new session. Shapes run one after another in one session, as in
        a server; when a provider fails at a shape only after other shapes ran (a provider keeping
        state from an earlier shape), the fresh session passes and the reason says so."""
        for si, live in enumerate(self.live):
            for pi, k in [(pi, k) for pi, k in self.failing_shapes(si, len(plans)) if pi > 0][:limit]:
                plan = plans[pi]
                arrays = sample_of(plan, k)
                expected = source(arrays, f"{plan.label} sample {k}", plan.file)
                try:
                    session = _open_session(onnx_path, live.result.request, shared, opt_level=opt_level,
                                            threads=threads, record_placement=False)
                    got = session.run(None, resolved.feeds(arrays))
                except Exception:  # noqa: BLE001 - the original failure stands on its own
                    continue
                finally:
                    session = None  # closed before the next shape's loads: one more copy of the weights at most
                checks = [OutputStats(*self.tolerances.get(name, default_tolerance(b, self.rtol, self.atol)),
                                      self.min_cosine) for name, b in zip(self.output_names, expected)]
                scales = self.scales.get(pi, [None] * len(checks))
                if len(got) == len(expected) and all(c.update(a, b, scale=sc)
                                                     for c, a, b, sc in zip(checks, got, expected, scales)):
                    self.fresh_notes[(si, pi)] = (
                        f"a new {live.result.request.name} session computes sample {k} of {plan.label} correctly: "
                        f"it fails only after {', '.join(p.label for p in plans[:pi])} ran in the same session, so "
                        "the provider keeps state from an earlier shape (a provider bug a long-lived session "
                        "serving several shapes hits too)")

    def collect(self, report: ParityReport, plans: list[ShapePlan], constant: dict[str, str] | None = None,
                allowed: Sequence[str] = ()) -> None:
        """Turn the statistics into one CaseResult per provider x shape x output, with reasons.
        `constant`: outputs the source gives the same for every input (name -> why); they fail
        every case as "not compared" unless `allowed`."""
        constant = constant or {}
        static_notes = [n for n in report.notes if "is static" in n]
        for si, s in enumerate(self.live):
            pr = s.result
            for pi, plan in enumerate(plans):
                error = self.run_errors.get((si, pi))
                fresh = self.fresh_notes.get((si, pi))
                share = self.run_time.get((si, pi), 0.0) / max(1, len(self.output_names))
                for oi, name in enumerate(self.output_names):
                    acc = self.stats.get((si, pi, oi))
                    if acc is None:  # no sample ran: the first run failed
                        reason = (error or "not run") + (
                            f"; {fresh}" if fresh else f"; {static_notes[0]}" if static_notes
                            else _run_error_hint(plan))
                        case = CaseResult(plan.label, name, "error", reason, None, share)
                    else:
                        reason = acc.failure_reason()
                        if reason and fresh:
                            reason += f"; {fresh}"
                        elif reason and any(p.startswith("shape ") for p in acc.problems):
                            reason += _baked_hint(acc, plan, report.export_sizes)
                        if error is not None:  # later samples stopped by a run error
                            reason = "; ".join(filter(None, [reason, error]))
                        case = CaseResult(plan.label, name, "passed" if reason is None else "failed", reason,
                                          acc, share)
                    if case.reason and plan.assumption:
                        case.reason = (f"outside the range torch.export assumed at export ({plan.assumption}): "
                                       f"{case.reason}")
                    if not case.passed:
                        report.failures.append(f"{pr.label} {plan.label} {name}: {case.reason}")
                    if name in constant and name not in allowed:
                        case.status = "failed" if case.status == "passed" else case.status
                        case.reason = "; ".join(filter(None, [f"not compared: constant output ({constant[name]})",
                                                              case.reason]))
                    pr.cases.append(case)
        for name, why in constant.items():
            if name in allowed:
                report.notes.append(f"output '{name}' is constant ({why}): compared, but no wrong value that is the "
                                    "same constant could show; allowed by --allow-constant")
                continue
            line = (f"output '{name}': not compared: constant output ({why}), so the check cannot fail; make the "
                    f"inputs exercise it (--range, --data), or allow it with --allow-constant {name} if it really "
                    "does not depend on the inputs")
            report.model_failures.append(line)
            report.failures.append(line)
        for si, s in enumerate(self.live):
            pr = s.result
            if any(not c.passed for c in pr.cases) and pr.status == "passed":
                pr.status = "failed"
                others = [o.result for o in self.live if o is not s]
                pr.reason = (_fresh_diagnosis(pr, [n for (i, _), n in self.fresh_notes.items() if i == si])
                             or _assumption_diagnosis(pr, plans)
                             or _cross_provider_diagnosis(pr, others) or _provider_diagnosis(pr, plans))
            elif pr.status == "passed" and pr.placement and pr.placement.fell_back:
                pr.reason = placement_text(pr.placement)


def _tick(progress: Progress | None, done: int, total: int, where: str) -> None:
    if progress is not None:
        progress(where, done, total)


def _run_error_hint(plan: ShapePlan) -> str:
    if plan.origin != "random" or not plan.sizes:
        return ""
    axes = ", ".join(f"'{k}'" for k in plan.sizes)
    return (f" ({axes} declared dynamic, yet the graph cannot run at {plan.label}: a size was probably fixed at "
            "export, e.g. int(x.shape[0]) or a reshape/expand to a traced size)")


def _baked_hint(acc: OutputStats, plan: ShapePlan, export_sizes: dict[str, int]) -> str:
    """Name the dynamic axis whose size the ONNX output does not follow."""
    if acc.onnx_shape is None or acc.source_shape is None or len(acc.onnx_shape) != len(acc.source_shape):
        return ""
    for axis, (got, want) in enumerate(zip(acc.onnx_shape, acc.source_shape)):
        if got == want:
            continue
        syms = [s for s, v in plan.sizes.items() if v == want]
        if not syms:
            continue
        sym = syms[0]
        known = export_sizes.get(sym)
        if known == got:
            return (f" (axis {axis} stays at {got}, the export-time size of '{sym}': the size was baked into the "
                    "graph at export, e.g. int(x.shape[0]) or a reshape traced as a constant)")
        return (f" (axis {axis} is {got} where '{sym}' is {want}: a size was baked into the graph at export, "
                "e.g. int(x.shape[0]) or a reshape traced as a constant)")
    return ""


def _fresh_diagnosis(pr: ProviderResult, fresh_notes: list[str]) -> str | None:
    if not fresh_notes:
        return None
    return (f"{pr.request.name} gives wrong results at some shapes only after other shapes ran in the same session "
            "(a new session computes them correctly): a provider bug, not an export problem")


def _assumption_diagnosis(pr: ProviderResult, plans: list[ShapePlan]) -> str | None:
    """Every failing shape lies outside a range torch.export assumed: name the assumption."""
    by_label = {p.label: p for p in plans}
    bad = list(dict.fromkeys(c.shape for c in pr.cases if not c.passed and not (c.reason or "").startswith(
        "not compared: constant output")))
    if not bad or not all(by_label[b].assumption for b in bad if b in by_label):
        return None
    assumptions = ", ".join(dict.fromkeys(by_label[b].assumption or "" for b in bad if b in by_label))
    return (f"fails only outside the range torch.export assumed at export ({assumptions}), at {', '.join(bad)}: "
            "the exported graph is specialised to that range (a shape-dependent branch in forward(), e.g. "
            "`if x.shape[0] > 32`); make the branch shape-independent (torch.cond, torch.where) or keep inputs "
            "inside the range in serving")


def _cross_provider_diagnosis(pr: ProviderResult, others: list[ProviderResult]) -> str | None:
    """A provider failing cases another provider passes: the export is right, this provider is not."""
    bad = {(c.shape, c.output) for c in pr.cases if not c.passed}
    for other in others:
        good = {(c.shape, c.output) for c in other.cases if c.passed}
        if bad and bad <= good:
            return (f"{other.label} passes the cases {pr.label} fails, so the exported graph is right there: "
                    f"{pr.request.name} computes them differently from the source (a provider bug or a precision "
                    "it lowers to)")
    return None


def _provider_diagnosis(pr: ProviderResult, plans: list[ShapePlan]) -> str | None:
    """When some random shapes pass and others fail, say so; name a size fixed at export only when
    the evidence says the size decides: every sample of every failing shape fails, with shapes that
    do not follow the axis or values far beyond float32 rounding. Otherwise values may decide it
    (a branch on data, rows of a batch), and the pattern is stated without a cause."""
    failed = [c for c in pr.cases if not c.passed]
    bad = list(dict.fromkeys(c.shape for c in failed))
    good = [p.label for p in plans if p.label not in bad and p.origin == "random"]
    if not good or not all(p.origin == "random" for p in plans if p.label in bad):
        return None
    pattern = f"passes at {', '.join(good)} but fails at {', '.join(bad)}"
    stats = [c.stats for c in failed if c.stats is not None and c.stats.samples]
    size_decides = bool(stats) and all(s.failed_samples == s.samples for s in stats)
    if size_decides and any(s.problems or s.max_rel_diff > 1e-2 for s in stats):
        return (f"{pattern}, on every sample: the graph is right only at some sizes of a dynamic axis, so a size "
                "was fixed at export or a shape-dependent branch (e.g. `if x.shape[0] > 1`) was specialised")
    return f"{pattern} ({'every' if size_decides else 'some'} sample(s) of those shapes fail)"
