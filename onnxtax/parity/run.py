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
from pathlib import Path
from typing import Any, Sequence

from onnxtax.core.artifact import Artifact, open_artifact
from onnxtax.core.compare import Constancy, ToleranceRule, rms
from onnxtax.core.defaults import LOCALIZE_MEMORY_MB, LOCALIZE_TIME_BUDGET_S
from onnxtax.core.defaults import PARITY_ASSUMED_SIZE_CAP as ASSUMED_SIZE_CAP
from onnxtax.core.errors import InputSpecError
from onnxtax.core.identity import check_model_matches
from onnxtax.core.inputs import ResolvedInputs
from onnxtax.core.manifest import assumed_text
from onnxtax.core.progress import Progress
from onnxtax.core.providers import ProviderRequest
from onnxtax.core.reference import EagerReference, refuse_nondeterministic
from onnxtax.core.specs import InputSpec, SampleRecipe, concrete_shape, is_integer, make_inputs, symbols_of
from onnxtax.core.specs import export_sizes as default_export_sizes
from onnxtax.parity.attribution import check_assumed
from onnxtax.core.noise import NOISE_SAMPLES, largest_noise
from onnxtax.parity.comparison import Comparison
from onnxtax.parity.localization import localize
from onnxtax.parity.options import ParityOptions, parse_tolerances  # noqa: F401 (parse_tolerances: the face's)
from onnxtax.parity.report import ParityReport, ProviderResult, fallback_reason
from onnxtax.parity.sessions import LiveSession, check_memory, open_sessions, weights_to_share
from onnxtax.parity.shapes import ShapePlan, plan_assumed, plan_data_file, plan_shapes, sample_inputs


def check_parity(model: Any, onnx_path: str | Path | Artifact,
                 inputs: Sequence[str | InputSpec] | ResolvedInputs | None = None, options: ParityOptions | None = None,
                 *, progress: Progress | None = None, **kwargs: Any) -> ParityReport:
    """Compare the ONNX model with the eager source on every provider, shape and sample.

    Args:
        model: a spec string (`path/to/file.py:NAME`), a LoadedModel or an nn.Module.
        onnx_path: the exported model, or an opened Artifact.
        inputs: `NAME:DIMS[:DTYPE]` strings or InputSpecs, in forward() order, or ResolvedInputs;
            default: the manifest beside the model, else the ONNX graph's inputs (inputs.resolve_inputs).
        options: ParityOptions, or its fields as keyword arguments:
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
              in memory once; auto: from PARITY_SHARE_MIN_BYTES of weights; see onnxtax.core.sharing).
          localize: on failure, find each failing provider's first divergent module, node and
              source line (onnxtax.parity.localization), within `localize_budget_s` seconds in all, holding at
              most `localize_memory_mb` of intermediate values at a time.
        progress: a Progress, called as progress(description, done, total).

    An INT8 artifact written by `onnxtax quantize` is re-checked against the segments and budgets
    it was approved on (onnxtax.quantize.check_quantized), and that QuantizeReport is returned.

    Raises OnnxtaxError (exit 2) for unusable inputs, unknown/unavailable providers and a
    non-deterministic source. Failures of the artifact are in the report, never raised.
    """
    t_start = time.perf_counter()
    opts = ParityOptions.build(options, **kwargs)
    from onnxtax.core.hub.text import bind_text

    opts.data_files = bind_text(model, opts.data_files)  # text files: tokenized by an hf:/st: model's tokenizer

    from onnxtax.core.inputs import resolve_inputs
    from onnxtax.core.loading import check_inputs_match, resolve_model
    from onnxtax.core.memory import StageMeter
    from onnxtax.core.providers import resolve_providers

    artifact = open_artifact(onnx_path)
    if artifact.quantization is not None:
        # an INT8 artifact is held to the budgets it was approved on, not to FP32 tolerances
        from onnxtax.quantize import check_quantized

        return check_quantized(model, artifact, providers=opts.providers, progress=progress)
    meter = StageMeter("parity")
    resolved = resolve_inputs(artifact, inputs, ranges=opts.ranges)
    requests, skipped = resolve_providers(opts.providers, skip_unavailable=opts.skip_unavailable)
    check_memory(meter, artifact, opts.share_weights, requests)
    import onnxruntime  # noqa: F401 - imported before the mark: the interpreter's share, not the stage's
    import torch  # noqa: F401

    meter.mark_before_model()
    loaded = resolve_model(model)
    check_model_matches(loaded.module, artifact.manifest, artifact.path.name, loaded.spec)
    module = check_inputs_match(loaded.module, resolved.specs, loaded.spec)
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    layouts: list = []  # parameters the sharing made transposed views (onnxtax.core.transposed)
    try:
        report = _run(module, None if loaded.in_memory else loaded.spec, artifact, resolved, opts, requests=requests,
                      skipped=skipped, progress=progress, t_start=t_start, layouts=layouts)
        report.memory = meter.record()
        return report
    finally:
        for m, was_training in flags:
            m.training = was_training
        for views in layouts:  # the module as parity found it: each parameter its own memory again
            views.restore()


def _run(module: Any, spec_text: str | None, artifact: Artifact, resolved: ResolvedInputs, opts: ParityOptions, *,
         requests: list[ProviderRequest], skipped: list[ProviderRequest], progress: Progress | None,
         t_start: float, layouts: list | None = None) -> ParityReport:
    from onnxtax.core.report import package_versions

    onnx_path = artifact.path
    dims, samples, seed, data_files = opts.dims, opts.samples, opts.seed, opts.data_files
    rtol, atol, tolerances, min_cosine = opts.rtol, opts.atol, dict(opts.tolerances or {}), opts.min_cosine
    allow_constant, test_assumed, share_weights = list(opts.allow_constant), opts.test_assumed, opts.share_weights
    fail_on_fallback, opt_level, threads, max_shapes = opts.fail_on_fallback, opts.opt_level, opts.threads, opts.max_shapes
    localize = (opts.localize_budget_s, opts.localize_memory_mb) if opts.localize else None
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
    assumed = {sym: r for sym, r in artifact.assumed_ranges.items() if sym in set(symbols_of(specs))}
    report.assumed_ranges = assumed
    if samples and assumed:
        if test_assumed:
            plans += plan_assumed(plans, assumed, specs, export_sizes, samples=samples, notes=report.notes)
        else:
            report.notes.append("torch.export assumed " + "; ".join(assumed_text(s, r) for s, r in assumed.items())
                                + " at export; sizes outside are not tested (--no-test-assumed)")
    plans += [plan_data_file(f, specs) for f in data_files or []]
    report.shapes = plans

    shared = weights_to_share(module, artifact, share_weights, requests)
    if shared is not None and layouts is not None:
        layouts.append(shared.views)
    if shared is not None:
        report.weights = shared.sharing.to_dict()
        report.notes.append(shared.sharing.note())
    opened = open_sessions(artifact, requests, opt_level=opt_level, threads=threads, shared=shared)
    live = [o for o in opened if isinstance(o, LiveSession)]
    report.providers = [o.result if isinstance(o, LiveSession) else o for o in opened]
    for req in skipped:
        report.providers.append(ProviderResult(req, "skipped", "skipped: not available on this host"))
    for pr in report.providers:
        if fail_on_fallback and pr.placement is not None and (pr.placement.fell_back
                                                              or pr.placement.method == "unavailable"):
            pr.status = "failed"
            pr.reason = pr.gate = fallback_reason(pr)
    if not requests:
        report.model_failures.append("no provider ran: every requested provider was skipped, nothing was compared")
    if not live:
        report.duration_s = time.perf_counter() - t_start
        return report

    value_ranges = resolved.ranges
    recipe = SampleRecipe(seed, value_ranges)
    source = EagerReference(module, specs, value_ranges)
    rule = report.rule = ToleranceRule(rtol, atol, min_cosine, opts.noise_factor, dict(tolerances))
    measure_noise(rule, report, source, plans, specs, recipe, output_names, progress)
    comparison = Comparison(live, output_names, rule)
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

    if assumed and test_assumed:
        # a failure just outside an assumed range is the range's only when inside it the same sample passes
        comparison.range_checks = check_assumed(comparison, plans, assumed, specs,
                                                lambda plan, k: sample_inputs(plan, specs, recipe, k), source,
                                                resolved.feeds)
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
    if localize is not None and not report.passed:
        budget_s, memory_mb = localize
        localize_failures(report, module, artifact, plans, lambda plan, k: sample_inputs(plan, specs, recipe, k), specs,
                          resolved.onnx_names, opt_level=opt_level, threads=threads, memory_budget_mb=memory_mb,
                          time_budget_s=budget_s, progress=progress,
                          shared_weights=None if changed else shared)  # changed: the file's values, from the file
    report.duration_s = time.perf_counter() - t_start
    return report


def measure_noise(rule: ToleranceRule, report: ParityReport, source: EagerReference, plans: list[ShapePlan],
                  specs: list[InputSpec], recipe: SampleRecipe, output_names: list[str],
                  progress: Progress | None) -> None:
    """The model's own rounding noise per output, once per run, at the largest random shape (the
    shape whose reductions are longest), into `rule` and the report: per output the largest over
    its samples, one per input scale (1, 0.1, 10: a residual block's noise relative to its output
    is 3x larger at scale 0.1 than at 1, where the exact input dominates). A shape the eager model
    rejects is left to the comparison loop, which adapts or reports it: the noise is then measured
    at the next largest shape."""
    if not rule.uses_noise or not plans:
        return
    t0 = time.perf_counter()
    order = sorted(range(len(plans)), key=lambda i: (plans[i].origin != "random", -math.prod(plans[i].sizes.values())))
    for pi in order:
        plan = plans[pi]
        if progress is not None:
            progress(f"measuring the model's own float32 noise at {plan.label} (float64 runs)")
        measured: list[list[float | None]] = []
        why = None
        try:
            for k in range(min(plan.samples, NOISE_SAMPLES) if plan.origin == "random" else 1):
                arrays = sample_inputs(plan, specs, recipe, k)
                expected = source(arrays, f"{plan.label} sample {k}", plan.file)
                noise, why = source.noise(arrays, expected)
                measured.append(noise)
                if why:
                    break
        except InputSpecError:
            if not measured:
                continue
        rule.noise = dict(zip(output_names, largest_noise(measured)))
        rule.dtypes = dict(zip(output_names, source.dtypes))
        rule.noise_note = why
        report.noise_shape, report.noise_samples = plan.label, len(measured)
        break
    report.noise_s = time.perf_counter() - t0
    if rule.noise_note:
        report.notes.append(f"the model's own noise was not measured ({rule.noise_note}): outputs are held to the "
                            f"fixed floors (atol {rule.atol:g} x rms, rtol {rule.rtol:g})")


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


def _tick(progress: Progress | None, done: int, total: int, where: str) -> None:
    if progress is not None:
        progress(where, done, total)


# --------------------------------------------------------------------------- parity's failures
def localize_failures(report: Any, module: Any, onnx_path: Any, plans: Sequence[Any], sample_of: Any,
                      specs: Sequence[Any], mapping: dict[str, str], *, opt_level: str = "all",
                      threads: int | None = None, memory_budget_mb: float = LOCALIZE_MEMORY_MB,
                      time_budget_s: float = LOCALIZE_TIME_BUDGET_S, progress: Any = None,
                      shared_weights: Any = None) -> None:
    """Localise the first failing value case of each provider of a parity report, in place: sets
    `provider.localization`, and makes the localisation the hint of that case and provider.

    The sample replayed is the case's worst one; the shapes parity ran before it in the same
    session are replayed first (sample 0 each), so a provider keeping state between shapes
    shows the same fault. One time budget covers all providers. `shared_weights`: parity's
    SharedWeights (or None), reused by the CPU localisation sessions."""
    deadline = time.perf_counter() + time_budget_s
    failing = [(pr, next((c for c in pr.cases if c.status == "failed" and c.stats is not None and c.stats.samples),
                         None)) for pr in report.providers]
    failing = [(pr, c) for pr, c in failing if c is not None]
    for n, (pr, case) in enumerate(failing):
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            report.notes.append(f"localisation of {pr.label} not run: the time budget ({time_budget_s:g} s) ran out")
            continue
        pi = next(i for i, p in enumerate(plans) if p.label == case.shape)
        k = case.stats.worst.sample if case.stats.worst is not None else 0
        if progress is not None:
            progress(f"localizing {pr.label} {case.shape} sample {k}", n, len(failing))
        arrays = sample_of(plans[pi], k)
        evidence = [(j, arrays if j == k else sample_of(plans[pi], j)) for j in range(plans[pi].samples)]
        warmup = []
        for plan in plans[max(0, pi - 4):pi]:
            earlier = sample_of(plan, 0)
            warmup.append({mapping[name]: earlier[name] for name in mapping})
        loc = localize(module, onnx_path, arrays, specs=specs, mapping=mapping, request=pr.request,
                       rtol=case.stats.rtol_effective, atol=max(case.stats.atol, case.stats.noise_term), warmup=warmup,
                       case={"shape": case.shape, "sample": k, "output": case.output}, opt_level=opt_level,
                       threads=threads, memory_budget_mb=memory_budget_mb, time_budget_s=remaining,
                       shared_weights=shared_weights, evidence=evidence)
        others = [o for o in report.providers if o is not pr and o.status != "skipped"
                  for c in o.cases if (c.shape, c.output) == (case.shape, case.output)]
        passing = [o.label for o in report.providers if o is not pr
                   for c in o.cases if (c.shape, c.output) == (case.shape, case.output) and c.passed]
        loc.provider_specific = bool(passing) if others else None
        if loc.found and passing:
            loc.summary = f"on {pr.label} only ({', '.join(passing)} passes this case): {loc.summary}"
        if warmup:
            loc.notes.append("replayed " + ", ".join(p.label for p in plans[max(0, pi - 4):pi]) + " first in the "
                             "same session, as parity ran them (a provider may keep state between shapes)")
        pr.localization = case.localization = loc
