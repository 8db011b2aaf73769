"""The runtime compatibility matrix: does the artifact load, and compute what its source
computes, on each onnxruntime release the fleet runs?

Services pin onnxruntime (a Java or C++ service upgraded once a year, a mobile build, a
vendor image); passing on the release beside onnxtax says nothing about them. Each listed
release runs in its own cached virtualenv (onnxtax.runtimes.envs) through a self-contained
child script (onnxtax.runtimes.child): the release loads the model itself and reports its
own error verbatim when it refuses it. The reference is computed once, here: the eager
PyTorch model when a spec is given (parity's criterion, shapes and samples), else the
installed onnxruntime on CPU (then the matrix shows agreement between releases, and says so).

JSON schema of `RuntimeMatrixReport.to_dict()` (schema "onnxtax.runtimes/1"; keys stable):
{
  "schema": "onnxtax.runtimes/1",
  "passed": false,                               every listed release x available provider passed
  "onnx": "model.onnx", "model": {"ir_version": 10, "opsets": {"": 18}},
  "reference": {"kind": "eager" | "onnxruntime", "spec": "m.py:Net" | null, "onnxruntime": null | "1.31.1"},
  "input_source": "arguments" | "manifest" | "onnx-graph",
  "tolerance": {"rtol": 1e-4, "atol": 1e-5, "atol_scaled_by": "rms", "min_cosine": 0.999, "per_output": {}},
  "shapes": [...parity shape plans...], "seed": 0, "samples_per_shape": 3,
  "minimum_passing": "1.18.1" | null,            the lowest listed release that passed
  "passes_from": "1.18.1" | null,                the lowest listed release from which every higher listed one passed
  "results": [{"ort": "1.16.3", "provider": "CPUExecutionProvider", "short": "cpu", "label": "cpu",
               "status": "passed" | "failed" | "load-error" | "run-error" | "unavailable" | "crashed",
               "message": null | "<the runtime's own words, first line>", "detail": null | "<full text>",
               "predicted": ["IR version 10 is above ..."],       (the static table's reasons, [] = none known)
               "numpy": "1.26.4", "load_s": 0.01,
               "cases": [...parity cases: shape, output, status, reason, max_abs_diff, ...]}],
  "environments": [{"version": "1.16.3", "path": "...", "built_now": false, "build_s": null, "numpy": "1.26.4"}],
  "failures": ["1.16.3 cpu: load-error: Unsupported model IR version: 10, max supported IR version: 9"],
  "notes": [...], "duration_s": 3.2
}
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from onnxtax.core.defaults import ORT_OPT_LEVELS
from onnxtax.core.defaults import PARITY_ATOL as DEFAULT_ATOL
from onnxtax.core.defaults import PARITY_MIN_COSINE as DEFAULT_MIN_COSINE
from onnxtax.core.defaults import PARITY_RTOL as DEFAULT_RTOL
from onnxtax.core.defaults import PARITY_SAMPLES as DEFAULT_SAMPLES
from onnxtax.core.identity import check_model_matches, check_outputs_match
from onnxtax.core.errors import InputSpecError, OnnxtaxError
from onnxtax.core.progress import Progress, silent
from onnxtax.core.report import Verdict
from onnxtax.core.artifact import Artifact, open_artifact
from onnxtax.runtimes.envs import parse_versions, version_key
from onnxtax.runtimes.options import RuntimesOptions

SCHEMA = "onnxtax.runtimes/1"
CHILD_TIMEOUT_S = 1800
STATUSES = ("passed", "failed", "load-error", "run-error", "unavailable", "crashed")


def clean_ort_message(text: str) -> str:
    """The release's own words, first line (providers.ort_error_summary), without the
    'Load model from PATH failed:' prefix: the path is ours, the reason is theirs."""
    from onnxtax.core.providers import ort_error_summary

    return re.sub(r"^Load model from .*? failed:\s*", "", ort_error_summary(text)[0])


@dataclass
class RuntimeResult:
    """One release x provider."""

    ort: str
    provider: str
    options: dict[str, str]
    short: str
    status: str = "passed"
    message: str | None = None
    detail: str | None = None
    predicted: list[str] = field(default_factory=list)
    numpy: str | None = None
    load_s: float | None = None
    cases: list[Any] = field(default_factory=list)  # parity.CaseResult

    @property
    def label(self) -> str:
        return self.short + ("" if not self.options else ":" + ",".join(f"{k}={v}" for k, v in self.options.items()))

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_dict(self) -> dict:
        return {"ort": self.ort, "provider": self.provider, "options": dict(self.options), "short": self.short,
                "label": self.label, "status": self.status, "message": self.message, "detail": self.detail,
                "predicted": list(self.predicted), "numpy": self.numpy, "load_s": self.load_s,
                "cases": [c.to_dict() for c in self.cases]}


@dataclass
class RuntimeMatrixReport(Verdict):
    """Truthy when every listed release passed on every requested provider it has."""

    onnx: str
    versions: list[str]
    model_info: dict = field(default_factory=dict)
    reference: dict = field(default_factory=dict)
    input_source: str = "arguments"
    rtol: float = DEFAULT_RTOL
    atol: float = DEFAULT_ATOL
    per_output: dict[str, tuple[float, float]] = field(default_factory=dict)
    min_cosine: float | None = DEFAULT_MIN_COSINE
    seed: int = 0
    samples_per_shape: int = DEFAULT_SAMPLES
    shapes: list[Any] = field(default_factory=list)  # parity.ShapePlan
    results: list[RuntimeResult] = field(default_factory=list)
    environments: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    memory: Any = None  # onnxtax.core.memory.MemoryRecord of this process (each release runs in a child process)
    rule: Any = None  # onnxtax.core.compare.ToleranceRule (the noise measured on the eager reference)

    @property
    def failures(self) -> list[str]:
        out = []
        for r in self.results:
            if r.status in ("passed", "unavailable"):
                continue
            first_failed = next((c for c in r.cases if not c.passed), None)
            why = r.message or (f"{first_failed.shape} {first_failed.output}: {first_failed.reason}"
                                if first_failed is not None else r.status)
            out.append(f"{r.ort} {r.label}: {r.status}: {why}")
        for v in self.versions:
            ran = [r for r in self.results if r.ort == v and r.status != "unavailable"]
            if not ran:
                out.append(f"{v}: none of the requested providers is in this onnxruntime package: nothing ran")
        return out

    @property
    def passed(self) -> bool:
        return not self.failures

    def version_passed(self, version: str) -> bool:
        rows = [r for r in self.results if r.ort == version]
        return any(r.status == "passed" for r in rows) and all(r.status in ("passed", "unavailable") for r in rows)

    @property
    def minimum_passing(self) -> str | None:
        return next((v for v in self.versions if self.version_passed(v)), None)

    @property
    def passes_from(self) -> str | None:
        best = None
        for v in reversed(self.versions):
            if not self.version_passed(v):
                break
            best = v
        return best

    def to_dict(self) -> dict:
        return {"schema": SCHEMA, "passed": self.passed, "onnx": self.onnx, "model": dict(self.model_info),
                "reference": dict(self.reference), "input_source": self.input_source,
                "tolerance": {"rtol": self.rtol, "atol": self.atol, "atol_scaled_by": "rms",
                              "min_cosine": self.min_cosine,
                              "per_output": {k: {"rtol": r, "atol": a} for k, (r, a) in self.per_output.items()},
                              "noise_factor": self.rule.noise_factor if self.rule else None,
                              "noise": dict(self.rule.noise) if self.rule else {},
                              "noise_note": self.rule.noise_note if self.rule else None,
                              "rule": self.rule.text if self.rule else None},
                "shapes": [s.to_dict() for s in self.shapes], "seed": self.seed,
                "samples_per_shape": self.samples_per_shape, "versions": list(self.versions),
                "minimum_passing": self.minimum_passing, "passes_from": self.passes_from,
                "results": [r.to_dict() for r in self.results], "environments": list(self.environments),
                "failures": self.failures, "notes": list(self.notes), "duration_s": self.duration_s,
                "memory": self.memory.to_dict() if self.memory else None}


# ------------------------------------------------------------------------------ inputs and reference
def _installed_reference(onnx_path: Path, opt_level: str) -> Callable[[dict], list]:
    """Outputs of the installed onnxruntime on CPU, when there is no eager model to compare with."""
    from onnxtax.core.providers import open_session, parse_provider

    session = open_session(onnx_path, parse_provider("cpu"), opt_level=opt_level, record_placement=False)
    return lambda feeds: list(session.run(None, feeds))


# ------------------------------------------------------------------------------ the matrix
def check_runtimes(onnx_path: str | Path | Artifact, versions: Sequence[str] | None = None, model: Any = None,
                   inputs: Sequence[str] | None = None, options: RuntimesOptions | None = None, *,
                   progress: Progress | None = None, **kwargs: Any) -> RuntimeMatrixReport:
    """Load and run `onnx_path` on each onnxruntime release in `versions` (exact releases, each
    in its cached virtualenv) and compare with the reference at parity's shapes and samples.

    Args:
        model: a spec string, LoadedModel or nn.Module for the eager reference; None: the installed
            onnxruntime on CPU is the reference.
        inputs: NAME:DIMS[:DTYPE] specs; default the manifest's, else the graph's.
        options: RuntimesOptions, or its fields as keyword arguments (versions, providers,
            cache_dir, offline, and parity's comparison options).
    Raises OnnxtaxError (exit 2) for unusable inputs, versions that cannot be installed, and
    --offline with a release missing from the cache. What the releases do is in the report.
    """
    import numpy as np

    from onnxtax.core.inputs import resolve_inputs
    from onnxtax.core.memory import StageMeter
    from onnxtax.core.providers import parse_provider
    from onnxtax.core.specs import SampleRecipe
    from onnxtax.parity.shapes import ShapePlan, plan_data_file, plan_shapes, sample_inputs
    from onnxtax.runtimes.envs import ensure_env, resolve_cache_dir

    t_start = time.perf_counter()
    say = progress or silent
    if versions is not None:
        kwargs["versions"] = list(versions)
    opts = RuntimesOptions.build(options, **kwargs)
    from onnxtax.core.hub.text import bind_text

    opts.data_files = bind_text(model, opts.data_files)  # text files: tokenized by an hf:/st: model's tokenizer
    dims, samples, seed, ranges, data_files = opts.dims, opts.samples, opts.seed, opts.ranges, opts.data_files
    rtol, atol, tolerances, min_cosine, opt_level = opts.rtol, opts.atol, opts.tolerances, opts.min_cosine, opts.opt_level
    max_shapes, export_sizes, cache_dir, offline = opts.max_shapes, opts.export_sizes, opts.cache_dir, opts.offline
    versions = parse_versions(list(opts.versions))
    requests = [parse_provider(p) for p in (opts.providers or ["cpu"])]
    meter = StageMeter("runtimes")
    artifact = open_artifact(onnx_path)
    onnx_path, graph = artifact.path, artifact.graph
    meter.check(artifact.weights_bytes)
    resolved = resolve_inputs(artifact, inputs, ranges=ranges)

    report = RuntimeMatrixReport(str(onnx_path), versions, rtol=rtol, atol=atol, per_output=dict(tolerances or {}),
                                 min_cosine=min_cosine, seed=seed, samples_per_shape=samples, input_source=resolved.source,
                                 notes=list(resolved.notes))
    report.model_info = {"ir_version": graph.ir_version,
                         "opsets": {(i.domain or ""): i.version for i in graph.opset_import}}
    output_names = resolved.output_names
    for name in report.per_output:
        if name not in output_names:
            raise InputSpecError(f"--tolerance names '{name}', which is not an ONNX output",
                                 f"outputs: {', '.join(output_names)}")

    specs = resolved.specs
    recipe = SampleRecipe(seed, resolved.ranges)
    plans: list[ShapePlan] = plan_shapes(specs, dims, export_sizes or resolved.export_sizes, samples=samples,
                                         joint=resolved.source == "onnx-graph",
                                         max_shapes=max_shapes) if samples else []
    plans += [plan_data_file(f, specs) for f in data_files or []]
    report.shapes = plans
    mapping = resolved.onnx_names

    # The reference, once, in this process.
    say("computing the reference outputs")
    loaded = None
    if model is not None:
        from onnxtax.core.loading import check_inputs_match, resolve_model
        from onnxtax.core.reference import EagerReference

        loaded = resolve_model(model)
        loaded.module.eval()
        check_model_matches(loaded.module, artifact.manifest, artifact.path.name, loaded.spec)
        module = check_inputs_match(loaded.module, specs, loaded.spec)  # keyword-only inputs passed by name
        source = EagerReference(module, specs, resolved.ranges)
        reference = lambda arrays, where, file: source(arrays, where, file)  # noqa: E731
        report.reference = {"kind": "eager", "spec": None if loaded.in_memory else loaded.spec,
                            "class_name": type(module).__name__, "onnxruntime": None}
    else:
        from onnxtax.core.providers import ort_package

        run_installed = _installed_reference(onnx_path, opt_level)
        reference = lambda arrays, where, file: run_installed(resolved.feeds(arrays))  # noqa: E731
        report.reference = {"kind": "onnxruntime", "spec": None, "onnxruntime": ort_package()[1]}
        report.notes.append(f"no model spec: the reference is onnxruntime {ort_package()[1]} (installed) on CPU, so "
                            "this shows agreement between releases, not with the PyTorch model; give SPEC for that")

    work = Path(tempfile.mkdtemp(prefix="onnxtax-runtimes-"))
    try:
        feeds_arrays: dict[str, np.ndarray] = {}
        cases, expected_all = [], []
        for pi, plan in enumerate(plans):
            for k in range(plan.samples):
                arrays = sample_inputs(plan, specs, recipe, k)
                expected = reference(arrays, f"{plan.label} sample {k}", plan.file)
                if len(expected) != len(output_names):
                    if loaded is not None:  # the SPEC's model is not the file's (a file onnxtax did not write)
                        check_outputs_match(len(expected), list(output_names), onnx_path.name, loaded.spec)
                    raise InputSpecError(f"the reference returns {len(expected)} outputs, the ONNX graph has "
                                         f"{len(output_names)} ({', '.join(output_names)})",
                                         "give the model spec this file was exported from")
                feeds = {}
                for name, onnx_name in mapping.items():
                    key = f"c{len(cases)}i{len(feeds)}"
                    feeds_arrays[key] = arrays[name]
                    feeds[onnx_name] = key
                cases.append({"plan": pi, "sample": k, "feeds": feeds})
                expected_all.append(expected)
        np.savez(work / "inputs.npz", **feeds_arrays)
        from onnxtax.core.compare import ToleranceRule

        report.rule = ToleranceRule(rtol, atol, min_cosine, opts.noise_factor if model is not None else 0.0,
                                    dict(tolerances or {}))
        if report.rule.uses_noise and cases:
            from onnxtax.parity.comparison import measure_case_noise

            say("measuring the model's own rounding noise (float64 run)")
            measure_case_noise(report.rule, source, plans, cases, expected_all, specs, recipe, output_names)

        # Every release ready before any comparison (a missing one is exit 2 before the work), and
        # built only once the reference is known to be the artifact's model (identity, output count).
        cache = resolve_cache_dir(cache_dir)
        envs = {}
        for v in versions:
            envs[v] = ensure_env(v, cache, offline=offline, say=say)
            report.environments.append(envs[v].to_dict())

        from onnxtax.core.ort_compat import limits_for, target_problems

        for i, v in enumerate(versions):
            say(f"onnxruntime {v}: loading and running the model", i, len(versions))
            try:
                predicted = [p.message for p in target_problems(graph, limits_for(v))]
            except OnnxtaxError:
                predicted = []
            rows = _run_release(envs[v], onnx_path, requests, cases, work, ORT_OPT_LEVELS[opt_level])
            for r, outputs in rows:
                r.predicted = predicted
                if r.status == "passed":
                    _compare(r, outputs, cases, expected_all, plans, output_names, report)
                report.results.append(r)
        say("done", len(versions), len(versions))
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    report.duration_s = time.perf_counter() - t_start
    report.memory = meter.record()
    return report


def _run_release(env, onnx_path: Path, requests, cases: list[dict], work: Path, opt_level: str
                 ) -> list[tuple[RuntimeResult, dict]]:
    """Run the child in the release's virtualenv; one RuntimeResult per requested provider."""
    import numpy as np

    from onnxtax.runtimes.child import RESULT_MARKER, child_script

    out_npz = work / f"outputs-{env.version}.npz"
    cfg = {"mode": "run", "model": str(onnx_path.absolute()), "inputs": str(work / "inputs.npz"),
           "outputs": str(out_npz), "opt_level": opt_level,
           "providers": [[req.name, req.options] for req in requests],
           "cases": [{"feeds": c["feeds"]} for c in cases]}
    cfg_path = work / f"run-{env.version}.json"
    cfg_path.write_text(json.dumps(cfg), encoding="utf-8")
    blank = [RuntimeResult(env.version, req.name, dict(req.options), req.short, numpy=env.numpy) for req in requests]
    try:
        proc = subprocess.run([str(env.python), "-I", child_script(), str(cfg_path)], capture_output=True,
                              text=True, timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        for r in blank:
            r.status, r.message = "crashed", f"onnxruntime {env.version} did not finish in {CHILD_TIMEOUT_S} s"
        return [(r, {}) for r in blank]
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_MARKER)), None)
    if line is None:
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        for r in blank:
            r.status = "crashed"
            r.message = f"the onnxruntime {env.version} process ended without a result (exit code {proc.returncode}): "\
                        f"{tail[0][:300]}"
            r.detail = (proc.stderr or "")[-4000:] or None
        return [(r, {}) for r in blank]
    result = json.loads(line[len(RESULT_MARKER):])
    with np.load(out_npz, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    rows = []
    for r, entry in zip(blank, result["providers"]):
        r.numpy = result.get("numpy")
        r.load_s = entry.get("load_s")
        if entry["status"] == "unavailable":
            r.status, r.message = "unavailable", entry["error"]
        elif entry["status"] == "load-error":
            r.status, r.message, r.detail = "load-error", clean_ort_message(entry["error"]), entry["error"]
        rows.append((r, {"cases": entry.get("cases", []), "arrays": arrays}))
    return rows


def _compare(r: RuntimeResult, outputs: dict, cases: list[dict], expected_all: list, plans, output_names,
             report: RuntimeMatrixReport) -> None:
    """parity's criterion (onnxtax.core.compare) per shape x output, folded over the samples of each
    shape: atol scaled by the source output's RMS at that shape, the cosine gate per sample."""
    from onnxtax.core.compare import rms
    from onnxtax.parity import CaseResult

    stats: dict[tuple[int, int], Any] = {}
    errors: dict[int, str] = {}
    scales = {(pi, oi): rms([e[oi] for c, e in zip(cases, expected_all) if c["plan"] == pi])
              for pi in range(len(plans)) for oi in range(len(output_names))}
    for ci, (case, expected) in enumerate(zip(cases, expected_all)):
        got = outputs["cases"][ci]
        pi = case["plan"]
        if got["error"] is not None:
            errors.setdefault(pi, clean_ort_message(got["error"]))
            continue
        for oi, (key, b) in enumerate(zip(got["keys"], expected)):
            acc = stats.get((pi, oi))
            if acc is None:
                acc = stats[(pi, oi)] = report.rule.stats(output_names[oi], b)
            acc.update(outputs["arrays"][key], b, sample=case["sample"], scale=scales[(pi, oi)])
    for pi, plan in enumerate(plans):
        for oi, name in enumerate(output_names):
            acc = stats.get((pi, oi))
            if acc is None:
                r.cases.append(CaseResult(plan.label, name, "error",
                                          f"onnxruntime {r.ort} failed to run at {plan.label}: {errors.get(pi)}"))
                continue
            reason = acc.failure_reason()
            if pi in errors:
                reason = "; ".join(filter(None, [reason, f"a later sample failed to run: {errors[pi]}"]))
            r.cases.append(CaseResult(plan.label, name, "passed" if reason is None else "failed", reason, acc))
    if any(c.status == "error" for c in r.cases):
        r.status = "run-error"
        r.message = next(c.reason for c in r.cases if c.status == "error")
    elif any(not c.passed for c in r.cases):
        r.status = "failed"


# ------------------------------------------------------------------------------ measuring limits
def measure_limits(versions: Sequence[str], *, cache_dir: str | Path | None = None, offline: bool = False,
                   progress: Progress | None = None) -> list:
    """Each release's highest loadable IR version and opsets, measured in its virtualenv (see
    ort_compat.probe_models); the rows `onnxtax runtimes --limits` prints."""
    from onnxtax.runtimes.child import RESULT_MARKER, child_script
    from onnxtax.core.ort_compat import limits_from_probes, probe_models
    from onnxtax.runtimes.envs import ensure_env, resolve_cache_dir

    say = progress or silent
    cache = resolve_cache_dir(cache_dir)
    envs = [ensure_env(v, cache, offline=offline, say=say) for v in parse_versions(list(versions))]
    rows = []
    with tempfile.TemporaryDirectory(prefix="onnxtax-limits-") as tmp:
        probes = probe_models(Path(tmp))
        cfg = Path(tmp) / "limits.json"
        cfg.write_text(json.dumps({"mode": "limits", "probes": probes}), encoding="utf-8")
        for env in envs:
            say(f"onnxruntime {env.version}: loading the probe models")
            proc = subprocess.run([str(env.python), "-I", child_script(), str(cfg)], capture_output=True,
                                  text=True, timeout=CHILD_TIMEOUT_S)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_MARKER)), None)
            if line is None:
                raise OnnxtaxError(f"onnxruntime {env.version} crashed while loading the probe models "
                                   f"(exit code {proc.returncode})", "run with --debug; report the release")
            rows.append(limits_from_probes(env.version, json.loads(line[len(RESULT_MARKER):])["probes"]))
    return rows


# ------------------------------------------------------------------------------ export --target-ort
def verify_for_target(onnx_path: Path, target, module, specs: list, export_sizes: dict[str, int], *,
                      ranges: dict | None = None, cache_dir: str | Path | None = None, offline: bool = False, progress: Progress | None = None
                      ) -> tuple[str, str | None, list[dict]]:
    """Run a freshly exported file in the target release (`target`: ort_compat.OrtLimits), one
    sample per parity shape on CPU, when its virtualenv is cached or can be built.

    Returns (check detail, warning when it could not be verified, matrix rows for the manifest);
    raises CheckFailed when that release refuses the file or computes something else."""
    from onnxtax.core.errors import CheckFailed
    from onnxtax.runtimes.envs import RuntimeEnvError, ensure_env, resolve_cache_dir

    version = target.latest
    try:
        ensure_env(version, resolve_cache_dir(cache_dir), offline=offline, say=progress)
    except RuntimeEnvError as exc:
        why = exc.message
        return (f"not run: {why}", f"not verified in onnxruntime {version}: {why} (run `onnxtax runtimes "
                f"--ort {version}` where it can be installed)", [])
    report = check_runtimes(onnx_path, [version], module, [str(s) for s in specs], samples=1, ranges=ranges,
                            export_sizes=export_sizes, cache_dir=cache_dir, offline=True, progress=progress)
    rows = [matrix_row(r) for r in report.results]
    if not report.passed:
        raise CheckFailed(f"onnxruntime {version}: {report.failures[0]}",
                          "see `onnxtax runtimes` for the full matrix; --debug shows the exporter's log")
    cases = sum(len(r.cases) for r in report.results)
    return f"onnxruntime {version} loads it and matches the eager model ({cases} shape x output case(s))", None, rows


def target_verifier(cache_dir: str | Path | None = None, offline: bool = False) -> Callable[..., tuple]:
    """What `export_model(verify_target=...)` calls for `--target-ort`: verify_for_target with
    this cache (export takes it as an argument: it does not import the runtime matrix)."""
    def verify(onnx_path: Path, target, module, specs: list, export_sizes: dict[str, int], *,
               ranges: dict | None = None, progress: Progress | None = None) -> tuple:
        return verify_for_target(onnx_path, target, module, specs, export_sizes, ranges=ranges, cache_dir=cache_dir,
                                 offline=offline, progress=progress)
    return verify


def matrix_row(r: RuntimeResult) -> dict:
    """One release x provider verdict, as the manifest records it."""
    return {"ort": r.ort, "provider": r.provider, "status": r.status, "message": r.message}


def record_matrix(onnx_path: str | Path, report: RuntimeMatrixReport) -> Path:
    """Merge this run's verdicts into the manifest's `runtime_matrix` (a release x provider
    tested again replaces its row), so the artifact carries where it was signed off."""
    from onnxtax.core.manifest import read_manifest, update_manifest

    manifest = read_manifest(onnx_path) or {}
    rows = {(r["ort"], r["provider"]): r for r in manifest.get("runtime_matrix") or []}
    rows.update({(r.ort, r.provider): matrix_row(r) for r in report.results})
    ordered = sorted(rows.values(), key=lambda r: (version_key(r["ort"]), r["provider"]))
    return update_manifest(onnx_path, "runtime_matrix", ordered)
