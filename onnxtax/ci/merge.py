"""`onnxtax report merge`: `onnxtax ci` runs from several hosts -> one model x provider matrix.

No host has every provider (CPU runners, NVIDIA hosts with CUDA/TensorRT, Intel hosts
with OpenVINO), so each kind of host runs `onnxtax ci` and this puts their reports
together: for each model and provider, what each host found (passed, fell back,
failed, error, not available, not run).

A conflict is the same model, the same artifact (sha256) and the same provider
(with the same options) passing on one host and failing on another: the verdict
depends on the machine, not the artifact, which a release gate must not ignore.
Hosts that exported different bytes are listed per artifact and are not conflicts.

The merge is a gate, so it trusts nothing it cannot read. Every run's `ci.json` is
read: a run that was interrupted, failed or errored fails the merge, and so does a
folder of model reports without a `ci.json` (a run killed before its end). Any `.json`
under the folders that cannot be parsed, and any onnxtax report whose keys have the
wrong types, is a usage error naming the file (exit 2): a truncated report of a failed
model must never let the rest pass.

Signatures (ci.signatures): once any host signed a model, every host must have signed it with
the same key over the same bytes; a host that did not, or built different bytes, fails the merge.

The merge passes (exit 0) when every run finished and passed, there is no conflict and no
signature problem; otherwise exit 1. Folders without any model report, and unreadable or
invalid reports, are exit 2.

JSON schema of `Matrix.to_dict()` ("onnxtax.matrix/1", keys stable):
{
  "schema": "onnxtax.matrix/1", "passed": true,
  "hosts": [{"label": "cpu-runner", "source": "reports/cpu", "hostname": "...", "cpu": "...", "gpus": [],
             "onnxruntime_package": "onnxruntime", "onnxruntime": "1.31.1",
             "compute_providers": ["CPUExecutionProvider"], "passed": true}],
  "models": [{"model": "fraud",
              "hosts": {"cpu-runner": {"status": "passed", "artifact_sha256": "...", "failed_stage": null,
                                       "reason": null}}}],
  "runs": [{"label": "cpu-runner", "source": "reports/cpu", "problems": ["interrupted by SIGTERM: 1 of 3 models finished"]}],
  "matrix": [{"model": "fraud", "provider": "cpu", "provider_name": "CPUExecutionProvider",
              "verdict": "passed" | "fell_back" | "failed" | "error" | "not_available" | "not_run" | "conflict",
              "hosts": {"cpu-runner": {"verdict": "passed", "reason": null, "artifact_sha256": "...",
                                       "placement": {...} | null}}}],
  "runtime_matrix": [{"model": "fraud", "ort": "1.16.3", "provider": "cpu",     (from `[runtimes]` ci stages)
                      "verdict": "passed" | "failed" | "load-error" | "run-error" | "crashed" | "unavailable"
                                 | "conflict",
                      "hosts": {"cpu-runner": {"status": "passed", "message": null, "artifact_sha256": "..."}}}],
  "signatures": [{ci.signatures row: per model, each host's signing status, key and digests; "verdict"
                  "consistent" | "unsigned" | "inconsistent", "problems"}],
  "conflicts": [{"model": "fraud", "provider": "cpu" | "ort-1.16.3 cpu", "artifact_sha256": "...",
                 "passed_on": ["cpu-runner"], "failed_on": ["other-runner"], "reasons": {"other-runner": "..."}}],
  "notes": ["..."]
}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from onnxtax.ci.run import MODEL_SCHEMA, PASSING, RUN_SCHEMA, VERDICT_TEXT, VERDICTS
from onnxtax.ci.signatures import signature_markdown, signature_rows
from onnxtax.core.errors import OnnxtaxError
from onnxtax.core.memory import format_bytes
from onnxtax.render.text import md_cell

MATRIX_SCHEMA = "onnxtax.matrix/1"
FAILING = ("failed", "error")


@dataclass
class HostRun:
    """The model reports one host wrote into one folder."""

    label: str
    source: str
    facts: dict
    models: dict[str, dict] = field(default_factory=dict)  # model name -> its report
    problems: list[str] = field(default_factory=list)  # the run itself did not pass (ci.json)

    @property
    def passed(self) -> bool:
        return not self.problems and all(m.get("status") == "passed" for m in self.models.values())

    def to_dict(self) -> dict:
        versions = self.facts.get("versions") or {}
        return {"label": self.label, "source": self.source, "hostname": self.facts.get("hostname"),
                "cpu": self.facts.get("cpu"), "gpus": self.facts.get("gpus") or [],
                "onnxruntime_package": versions.get("onnxruntime_package"),
                "onnxruntime": versions.get("onnxruntime"),
                "compute_providers": self.facts.get("compute_providers") or [], "passed": self.passed,
                "peak_memory": {name: peak for name, rep in self.models.items() if (peak := peak_memory(rep))}}


def peak_memory(model_report: dict) -> dict | None:
    """{"stage", "peak_rss_bytes", "weights_bytes"} of a model report's highest stage peak
    (None for reports written before stages recorded memory)."""
    peaks = [(name, st["memory"]) for name, st in (model_report.get("stages") or {}).items()
             if isinstance(st, dict) and isinstance(st.get("memory"), dict)
             and isinstance(st["memory"].get("peak_rss_bytes"), int)]
    if not peaks:
        return None
    name, mem = max(peaks, key=lambda p: p[1]["peak_rss_bytes"])
    return {"stage": name, "peak_rss_bytes": mem["peak_rss_bytes"], "weights_bytes": mem.get("weights_bytes")}


@dataclass
class Conflict:
    model: str
    provider: str
    artifact_sha256: str | None
    passed_on: list[str]
    failed_on: list[str]
    reasons: dict[str, str | None] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"model": self.model, "provider": self.provider, "artifact_sha256": self.artifact_sha256,
                "passed_on": self.passed_on, "failed_on": self.failed_on, "reasons": self.reasons}


@dataclass
class MatrixRow:
    model: str
    provider: str  # label, with options: "openvino:device_type=CPU"
    provider_name: str
    cells: dict[str, dict] = field(default_factory=dict)  # host label -> verdict record
    conflict: bool = False

    @property
    def verdict(self) -> str:
        if self.conflict:
            return "conflict"
        verdicts = [c["verdict"] for c in self.cells.values()]
        for v in ("error", "failed", "fell_back", "passed", "not_run"):
            if v in verdicts:
                return v
        return "not_available"

    def to_dict(self) -> dict:
        return {"model": self.model, "provider": self.provider, "provider_name": self.provider_name,
                "verdict": self.verdict, "hosts": self.cells}


@dataclass
class Matrix:
    """The merged view. Truthy when every host's every model passed and nothing conflicts."""

    hosts: list[HostRun]
    rows: list[MatrixRow]
    conflicts: list[Conflict]
    notes: list[str] = field(default_factory=list)
    runtime_rows: list[dict] = field(default_factory=list)  # model x onnxruntime release x provider
    signatures: list[dict] = field(default_factory=list)  # ci.signatures rows

    @property
    def passed(self) -> bool:
        return (not self.conflicts and all(h.passed for h in self.hosts)
                and not any(r["problems"] for r in self.signatures))

    def __bool__(self) -> bool:
        return self.passed

    @property
    def model_names(self) -> list[str]:
        return list(dict.fromkeys(name for h in self.hosts for name in h.models))

    def to_dict(self) -> dict:
        models = []
        for name in self.model_names:
            per_host = {}
            for h in self.hosts:
                rep = h.models.get(name)
                if rep is None:
                    continue
                problem = _first_problem(rep)
                per_host[h.label] = {"status": rep.get("status"), "artifact_sha256": rep.get("artifact_sha256"),
                                     "failed_stage": problem[0] if problem else None,
                                     "reason": problem[1] if problem else None}
            models.append({"model": name, "hosts": per_host})
        return {"schema": MATRIX_SCHEMA, "passed": self.passed, "hosts": [h.to_dict() for h in self.hosts],
                "models": models,
                "runs": [{"label": h.label, "source": h.source, "problems": h.problems} for h in self.hosts],
                "matrix": [r.to_dict() for r in self.rows], "runtime_matrix": self.runtime_rows,
                "signatures": self.signatures,
                "conflicts": [c.to_dict() for c in self.conflicts], "notes": self.notes}

    def markdown(self) -> str:
        return matrix_markdown(self)


def _first_problem(rep: dict) -> tuple[str, str | None] | None:
    for name, stage in (rep.get("stages") or {}).items():
        if stage.get("status") in FAILING:
            return name, stage.get("error") or stage.get("summary")
    return None


# --------------------------------------------------------------------------- reading

class ReportError(OnnxtaxError):
    """A report file that cannot be read, or is not what onnxtax ci writes."""


_MODEL_STATUSES = ("passed", "failed", "error", "not_run")
_STAGE_STATUSES = ("passed", "failed", "error", "not_run", "off")


def _check(path: Path, where: str, value: object, types: tuple[type, ...], choices: tuple = ()) -> None:
    """Wrong types and nulls are named, not dereferenced."""
    if not isinstance(value, types) or isinstance(value, bool) and bool not in types or (
            choices and value not in choices):
        want = f"one of {', '.join(map(repr, choices))}" if choices else " or ".join(
            "null" if t is type(None) else t.__name__ for t in types)
        raise ReportError(f"report {path} is not a valid onnxtax ci report: {where} is {json.dumps(value)[:60]}, "
                          f"expected {want}", "give the folders `onnxtax ci --reports` wrote, unmodified")


def _check_model(path: Path, data: dict, at: str = "") -> None:
    _check(path, f"{at}model", data.get("model"), (str,))
    _check(path, f"{at}status", data.get("status"), (str,), _MODEL_STATUSES)
    _check(path, f"{at}artifact_sha256", data.get("artifact_sha256"), (str, type(None)))
    _check(path, f"{at}host", data.get("host", {}), (dict,))
    sig = data.get("signature")
    _check(path, f"{at}signature", sig, (dict, type(None)))
    if sig is not None:
        for key in ("status", "key_fingerprint", "file"):
            _check(path, f"{at}signature.{key}", sig.get(key), (str, type(None)))
        _check(path, f"{at}signature.digests", sig.get("digests", {}), (dict,))
    stages = data.get("stages")
    _check(path, f"{at}stages", stages, (dict,))
    for name, stage in stages.items():
        _check(path, f"{at}stages.{name}", stage, (dict,))
        _check(path, f"{at}stages.{name}.status", stage.get("status"), (str,), _STAGE_STATUSES)
        for key in ("error", "summary"):
            _check(path, f"{at}stages.{name}.{key}", stage.get(key), (str, type(None)))
    providers = data.get("providers")
    _check(path, f"{at}providers", providers, (list,))
    for i, p in enumerate(providers):
        _check(path, f"{at}providers[{i}]", p, (dict,))
        _check(path, f"{at}providers[{i}].provider", p.get("provider"), (str,))
        _check(path, f"{at}providers[{i}].label", p.get("label", p.get("provider")), (str,))
        _check(path, f"{at}providers[{i}].verdict", p.get("verdict"), (str,), VERDICTS)
        _check(path, f"{at}providers[{i}].reason", p.get("reason"), (str, type(None)))
        _check(path, f"{at}providers[{i}].placement", p.get("placement"), (dict, type(None)))


def _check_run(path: Path, data: dict) -> None:
    _check(path, "interrupted", data.get("interrupted"), (bool,))
    _check(path, "passed", data.get("passed"), (bool,))
    _check(path, "exit_code", data.get("exit_code"), (int,))
    _check(path, "host", data.get("host"), (dict,))
    models = data.get("models")
    _check(path, "models", models, (list,))
    for i, m in enumerate(models):
        _check(path, f"models[{i}]", m, (dict,))
        _check_model(path, m, f"models[{i}].")


def read_report(path: Path) -> dict | None:
    """One .json under a reports folder: a validated model or run report, None for other
    JSON (e.g. host.json, a matrix), ReportError when it cannot be read or parsed."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ReportError(f"report {path} is unreadable: {why}",
                          "a truncated or damaged report cannot be trusted: re-run `onnxtax ci` on that host, or "
                          "remove the file if it is not a report") from exc
    if not isinstance(data, dict):
        return None
    if data.get("schema") == MODEL_SCHEMA:
        _check_model(path, data)
        return data
    if data.get("schema") == RUN_SCHEMA:
        _check_run(path, data)
        return data
    return None


def find_model_reports(folder: Path) -> list[tuple[Path, dict]]:
    """Every `onnxtax ci` model and run report (ci.json) under `folder` (downloaded CI
    artifacts nest folders), validated."""
    found = []
    for path in sorted(folder.rglob("*.json")):
        if path.is_file():
            data = read_report(path)
            if data is not None:
                found.append((path, data))
    return found


def _run_problems(run: dict) -> list[str]:
    """Why a run (its ci.json) did not pass, in words; [] when it passed."""
    models = run["models"]
    finished = sum(1 for m in models if m["status"] != "not_run")
    if run["interrupted"]:
        how = f" by {run['signal']}" if isinstance(run.get("signal"), str) else ""
        return [f"interrupted{how} (exit {run['exit_code']}): {finished} of {len(models)} models finished"]
    if (not run["passed"] or run["exit_code"] != 0) and all(m["status"] == "passed" for m in models):
        return [f"the run failed (exit {run['exit_code']}) although every model report passed"]
    return []  # a failing model says why itself


def load_host_runs(folders: list[str | Path]) -> list[HostRun]:
    """One HostRun per (folder, host label). Two runs that carry the same label get
    their folder name appended, so no host hides another."""
    runs: dict[tuple[str, str], HostRun] = {}
    for folder in dict.fromkeys(Path(f).resolve() for f in folders):  # a folder given twice counts once
        given = next(Path(f) for f in folders if Path(f).resolve() == folder)
        if not folder.is_dir():
            raise OnnxtaxError(f"report folder {given} " + ("is a file" if folder.exists() else "does not exist"),
                               "give the folders `onnxtax ci --reports DIR` wrote (or the CI artifacts holding them)")
        folder = given
        reports = find_model_reports(folder)
        run_files = {path.parent: (path, data) for path, data in reports if data["schema"] == RUN_SCHEMA}
        model_reports = [(path, data) for path, data in reports if data["schema"] == MODEL_SCHEMA]
        for path, data in run_files.values():  # a model whose own report is gone still counts
            have = {(str(p.parent), d["model"]) for p, d in model_reports}
            model_reports += [(path.parent / f"{m['model']}.json", m) for m in data["models"]
                              if (str(path.parent), m["model"]) not in have]
        if not model_reports:
            raise OnnxtaxError(f"no onnxtax ci model reports under {folder}",
                               "run `onnxtax ci --reports DIR` there first; each model writes DIR/<model>.json")
        for path, data in model_reports:
            facts = data.get("host") or {}
            label = str(facts.get("label") or facts.get("hostname") or path.parent.name)
            key = (str(path.parent), label)
            run = runs.get(key)
            if run is None:
                run = runs[key] = HostRun(label, str(path.parent), facts)
                ci_run = run_files.get(path.parent)
                if ci_run is None:
                    run.problems.append("no ci.json beside the model reports: the run did not finish (killed?)"
                                        + _killed_during(path.parent))
                else:
                    run.problems += _run_problems(ci_run[1])
            name = data["model"] or path.stem
            if name in run.models:
                raise OnnxtaxError(f"{path.parent} holds two reports for model '{name}' from host '{label}'",
                                   "give each host run its own reports folder")
            run.models[name] = data
    hosts = list(runs.values())
    counts: dict[str, int] = {}
    for h in hosts:
        counts[h.label] = counts.get(h.label, 0) + 1
    for h in hosts:
        if counts[h.label] > 1:
            h.label = f"{h.label} [{Path(h.source).name}]"
    seen: dict[str, int] = {}
    for h in hosts:  # same label and same folder name: number them
        seen[h.label] = seen.get(h.label, 0) + 1
        if seen[h.label] > 1:
            h.label = f"{h.label} #{seen[h.label]}"
    return hosts


def _killed_during(folder: Path) -> str:
    """What the running.json a killed `onnxtax ci` left says, when it left one."""
    from onnxtax.ci.report import RUNNING_FILE, RUNNING_SCHEMA

    try:
        data = json.loads((folder / RUNNING_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return ""
    if not isinstance(data, dict) or data.get("schema") != RUNNING_SCHEMA:
        return ""
    return f"; it stopped during the {data.get('stage')} stage of model '{data.get('model')}' ({RUNNING_FILE})"


# --------------------------------------------------------------------------- merging

def merge_reports(folders: list[str | Path]) -> Matrix:
    """Read every host run under `folders` and build the model x provider matrix."""
    hosts = load_host_runs(folders)
    rows: dict[tuple[str, str], MatrixRow] = {}
    notes: list[str] = []
    for h in hosts:
        for name, rep in h.models.items():
            for p in rep.get("providers") or []:
                label = p.get("label") or p.get("provider")
                row = rows.get((name, label))
                if row is None:
                    row = rows[(name, label)] = MatrixRow(name, label, p.get("provider") or label)
                row.cells[h.label] = {"verdict": p.get("verdict", "not_run"), "reason": p.get("reason"),
                                      "artifact_sha256": rep.get("artifact_sha256"),
                                      "placement": p.get("placement")}
    conflicts = []
    for row in rows.values():
        by_sha: dict[str | None, list[tuple[str, dict]]] = {}
        for host, cell in row.cells.items():
            by_sha.setdefault(cell["artifact_sha256"], []).append((host, cell))
        for sha, cells in by_sha.items():
            if sha is None:
                continue
            passed_on = [h for h, c in cells if c["verdict"] in PASSING]
            failed_on = [h for h, c in cells if c["verdict"] in FAILING]
            if passed_on and failed_on:
                row.conflict = True
                conflicts.append(Conflict(row.model, row.provider, sha, passed_on, failed_on,
                                          {h: c["reason"] for h, c in cells if c["verdict"] in FAILING}))
    model_names = list(dict.fromkeys(name for h in hosts for name in h.models))
    for name in model_names:
        shas = {h.label: h.models[name].get("artifact_sha256") for h in hosts if name in h.models}
        distinct = {s for s in shas.values() if s}
        if len(distinct) > 1:
            notes.append(f"{name}: hosts tested different artifacts ("
                         + ", ".join(f"{host} {(sha or '-')[:12]}" for host, sha in shas.items())
                         + "); verdicts compare the model, not one file")
        missing = [h.label for h in hosts if name not in h.models]
        if missing:
            notes.append(f"{name}: no report from {', '.join(missing)}")
    ordered = sorted(rows.values(), key=lambda r: (model_names.index(r.model), _provider_order(r.provider_name),
                                                    r.provider))
    runtime_rows = _runtime_rows(hosts, model_names, conflicts)
    return Matrix(hosts, ordered, conflicts, notes, runtime_rows, signature_rows(hosts))


RUNTIME_FAILING = ("failed", "load-error", "run-error", "crashed")


def _runtime_rows(hosts: list[HostRun], model_names: list[str], conflicts: list[Conflict]) -> list[dict]:
    """model x onnxruntime release x provider from each host's runtimes stage; the same artifact
    passing on one host and failing on another in the same release is a conflict too."""
    from onnxtax.runtimes import version_key

    rows: dict[tuple[str, str, str], dict] = {}
    for h in hosts:
        for name, rep in h.models.items():
            result = ((rep.get("stages") or {}).get("runtimes") or {}).get("result") or {}
            for r in result.get("results") or []:
                row = rows.setdefault((name, r["ort"], r["label"]), {"model": name, "ort": r["ort"],
                                                                     "provider": r["label"], "verdict": None,
                                                                     "hosts": {}})
                row["hosts"][h.label] = {"status": r["status"], "message": r.get("message"),
                                         "artifact_sha256": rep.get("artifact_sha256")}
    for row in rows.values():
        cells = row["hosts"]
        by_sha: dict[str | None, list[str]] = {}
        for host, cell in cells.items():
            by_sha.setdefault(cell["artifact_sha256"], []).append(host)
        for sha, names in by_sha.items():
            passed_on = [n for n in names if cells[n]["status"] == "passed"]
            failed_on = [n for n in names if cells[n]["status"] in RUNTIME_FAILING]
            if sha and passed_on and failed_on:
                row["verdict"] = "conflict"
                conflicts.append(Conflict(row["model"], f"ort-{row['ort']} {row['provider']}", sha, passed_on,
                                          failed_on, {n: cells[n]["message"] for n in failed_on}))
        if row["verdict"] is None:
            statuses = [c["status"] for c in cells.values()]
            row["verdict"] = next((v for v in RUNTIME_FAILING + ("passed",) if v in statuses), "unavailable")
    return sorted(rows.values(), key=lambda r: (model_names.index(r["model"]), version_key(r["ort"]), r["provider"]))


_PROVIDER_ORDER = ("CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider",
                   "OpenVINOExecutionProvider")


def _provider_order(name: str) -> int:
    return _PROVIDER_ORDER.index(name) if name in _PROVIDER_ORDER else len(_PROVIDER_ORDER)


# --------------------------------------------------------------------------- output

def matrix_markdown(matrix: Matrix) -> str:
    hosts = [h.label for h in matrix.hosts]
    if matrix.passed:
        n = len(matrix.model_names)
        head = (f"## ✅ onnxtax provider matrix: {n} model{'s' if n != 1 else ''} on {len(hosts)} "
                f"host{'s' if len(hosts) != 1 else ''}")
    else:
        problems = []
        if matrix.conflicts:
            problems.append(f"{len(matrix.conflicts)} conflicting verdict{'s' if len(matrix.conflicts) != 1 else ''}")
        failing = [h.label for h in matrix.hosts if not h.passed]
        if failing:
            problems.append(f"failures on {', '.join(failing)}")
        unsigned = [r["model"] for r in matrix.signatures if r["problems"]]
        if unsigned:
            problems.append(f"signatures disagree for {', '.join(unsigned)}")
        head = "## ❌ onnxtax provider matrix: " + "; ".join(problems)
    lines = [head, "", "| model | provider | " + " | ".join(md_cell(h) for h in hosts) + " | verdict |",
             "|---|---|" + "---|" * len(hosts) + "---|"]
    for row in matrix.rows:
        cells = []
        for h in hosts:
            cell = row.cells.get(h)
            cells.append("" if cell is None else VERDICT_TEXT.get(cell["verdict"], cell["verdict"]))
        overall = "⚠️❗ conflict" if row.conflict else VERDICT_TEXT.get(row.verdict, row.verdict)
        lines.append(f"| {row.model} | {md_cell(row.provider)} | " + " | ".join(cells) + f" | **{overall}** |")
    lines += ["", "| model | " + " | ".join(md_cell(h) for h in hosts) + " |", "|---|" + "---|" * len(hosts)]
    for name in matrix.model_names:
        cells = []
        for h in matrix.hosts:
            rep = h.models.get(name)
            if rep is None:
                cells.append("")
                continue
            status = rep.get("status", "")
            icon = {"passed": "✅", "failed": "❌", "error": "⛔"}.get(status, "⏭️")
            sha = (rep.get("artifact_sha256") or "")[:12]
            problem = _first_problem(rep)
            peak = peak_memory(rep)
            cells.append(f"{icon} {status}" + (f" `{sha}`" if sha else "")
                         + (f" ({problem[0]})" if problem else "")
                         + (f", peak {format_bytes(peak['peak_rss_bytes'])} {peak['stage']}" if peak else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if matrix.runtime_rows:
        lines += ["", "| model | onnxruntime | provider | " + " | ".join(md_cell(h) for h in hosts) + " | verdict |",
                  "|---|---|---|" + "---|" * len(hosts) + "---|"]
        for r in matrix.runtime_rows:
            cells = [r["hosts"][h]["status"] if h in r["hosts"] else "" for h in hosts]
            lines.append(f"| {r['model']} | {r['ort']} | {md_cell(r['provider'])} | " + " | ".join(cells)
                         + f" | **{r['verdict']}** |")
    lines += signature_markdown(matrix.signatures, hosts)
    if matrix.conflicts:
        lines += ["", "### Conflicting verdicts", ""]
        for c in matrix.conflicts:
            lines.append(f"- **{c.model}** on **{md_cell(c.provider)}**, artifact `{(c.artifact_sha256 or '')[:12]}`: "
                         f"passed on {', '.join(c.passed_on)}, failed on {', '.join(c.failed_on)}")
            for host, reason in c.reasons.items():
                if reason:
                    lines.append(f"  - {host}: {md_cell(reason)}")
    details = [(row, h, cell) for row in matrix.rows for h, cell in row.cells.items()
               if cell["verdict"] in ("failed", "error", "fell_back") and cell.get("reason")]
    if details:
        lines += ["", "### Details", ""]
        for row, h, cell in details:
            lines.append(f"- {row.model} / {md_cell(row.provider)} on {h}: {cell['verdict']}: {md_cell(cell['reason'])}")
    unfinished = [(h, problem) for h in matrix.hosts for problem in h.problems]
    if unfinished:
        lines += ["", "### Runs that did not pass", ""]
        lines += [f"- **{md_cell(h.label)}** (`{md_cell(h.source)}`): {md_cell(problem)}" for h, problem in unfinished]
    if matrix.notes:
        lines += ["", "### Notes", ""] + [f"- {md_cell(n)}" for n in matrix.notes]
    lines += ["", "### Hosts", ""]
    for h in matrix.hosts:
        d = h.to_dict()
        lines.append(f"- **{md_cell(h.label)}** ({d['hostname']}): {d['cpu']}"
                     + (f", GPU {', '.join(d['gpus'])}" if d["gpus"] else "")
                     + f"; {d['onnxruntime_package']} {d['onnxruntime']}; providers "
                       f"{', '.join(d['compute_providers'])}; reports `{d['source']}`")
    return "\n".join(lines) + "\n"



def write_matrix(matrix: Matrix, out_dir: str | Path) -> list[Path]:
    """OUT/matrix.json and OUT/matrix.md, each written atomically."""
    from onnxtax.core.files import write_output
    from onnxtax.core.report import jsonable

    out_dir = Path(out_dir)
    json_path, md_path = out_dir / "matrix.json", out_dir / "matrix.md"
    write_output(json_path, jsonable(matrix.to_dict()), "--output")
    write_output(md_path, matrix.markdown(), "--output")
    return [json_path, md_path]
