"""`onnxtax verify` and `onnxtax sign` on the console: the signature, each file, and the provenance
in words ("passed parity on cpu, openvino at 5 shapes on 2026-12-08 with onnxtax 0.2.0")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.markup import escape


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def gate_sentence(gate: dict, date: str | None = None) -> str:
    """One gate of a provenance (verify.attest.gates_of) as a sentence."""
    f = gate.get("facts") or {}
    name = gate.get("gate")
    verdict = gate.get("verdict") or "?"
    if name == "parity":
        text = (f"{verdict} parity on {', '.join(f.get('providers') or []) or 'no provider'} at "
                f"{_plural(int(f.get('shapes') or 0), 'shape')}")
        if f.get("not_available"):
            text += f" ({', '.join(f['not_available'])} not available)"
    elif name == "lint":
        text = (f"{verdict} lint-ops ({_plural(int(f.get('errors') or 0), 'error')}, "
                f"{_plural(int(f.get('warnings') or 0), 'warning')}; fails on {f.get('fail_on')})")
    elif name == "runtimes":
        text = f"{verdict} the runtime matrix on onnxruntime {', '.join(f.get('releases') or []) or '?'}"
        if f.get("providers"):
            text += f" ({', '.join(f['providers'])})"
    elif name == "quantize":
        text = f"{verdict} quantization budgets {', '.join(f.get('budgets') or []) or '(none recorded)'}"
        if f.get("segments"):
            text += f" on {_plural(len(f['segments']), 'segment')}"
    elif name == "bench":
        text = f"{verdict} bench gates: {'; '.join(f['gates'])}" if f.get("gates") else f"{verdict} bench"
    elif name == "export":
        text = f"{verdict} export checks ({', '.join(f.get('checks') or [])})"
    else:
        text = f"{verdict} {name}"
    if date:
        text += f" on {date[:10]}"
    if gate.get("onnxtax"):
        text += f" with onnxtax {gate['onnxtax']}"
    return text


def provenance_lines(provenance: dict, *, checked: bool) -> list[str]:
    """The provenance a verify report carries, as console markup lines."""
    statement = provenance.get("statement") or {}
    pred = statement.get("predicate") or {}
    run = pred.get("runDetails") or {}
    date = (run.get("metadata") or {}).get("finishedOn")
    builder = (run.get("builder") or {}).get("id")
    trust = "" if checked else " [yellow](not authenticated: the signature was not checked)[/]"
    lines = [f"[bold]provenance[/] {escape(str(provenance.get('file')))}: signed {escape(str(date))} by "
             f"{escape(str(builder))}{trust}"]
    for dep in (pred.get("buildDefinition") or {}).get("resolvedDependencies") or []:
        notes = dep.get("annotations") or {}
        if dep.get("name") == "model source":
            when = "" if notes.get("recorded") == "export" else " (taken when signed, not at export)"
            lines.append(f"  source  {escape(str(dep.get('uri')))} sha256 {dep['digest'].get('sha256', '')[:16]}{when}")
        elif dep.get("name") == "git":
            state = "dirty" if notes.get("dirty") else "clean"
            lines.append(f"  git     {escape(str(notes.get('path')))} at {dep['digest'].get('gitCommit', '')[:12]} "
                         f"({state}{'' if notes.get('tracked', True) else ', file not tracked'})")
        elif dep.get("name") == "fp32 artifact":
            lines.append(f"  from    {escape(str(dep.get('uri')))} sha256 {dep['digest'].get('sha256', '')[:16]}")
    for gate in provenance.get("gates") or []:
        lines.append(f"  {escape(gate_sentence(gate, date))}")
    return lines


def verify_summary(report: Any, out: Any) -> None:
    """Signature, files, extra files, provenance; then `verify failed:` with every reason on stderr."""
    sig = report.signature
    if sig is not None:
        if sig.status == "verified":
            names = ", ".join(f.file for f in sig.files)
            out.print(f"[green]{'signed':8}[/] {escape(str(sig.file))} verified: key {sig.key_fingerprint[:23]}…, "
                      f"{len(sig.files)} files ({escape(names)})", highlight=False, soft_wrap=True)
        elif sig.status == "not_checked":
            out.print(f"[yellow]{'signed':8}[/] {escape(str(sig.file))} by {escape(str(sig.signed_fingerprint))[:23]}… "
                      "(not checked: give --key PUBLIC.pem)", highlight=False, soft_wrap=True)
        elif sig.status == "unsigned":
            style = "red" if report.require_signature else "yellow"
            out.print(f"[{style}]{'unsigned':8}[/] {escape(str(sig.reason))}", highlight=False)
        else:
            out.print(f"[red]{'failed':8}[/] {escape(str(sig.reason))}", highlight=False, soft_wrap=True)
        for f in sig.files:
            if f.status != "ok":
                was = f"  (signed: {(f.signed_sha256 or '-')[:16]}, now: {(f.actual_sha256 or '-')[:16]})"
                out.print(f"[red]{f.status:8}[/] {escape(f.file)}{was}", highlight=False)
    for f in report.files:
        style = "green" if f.status == "ok" else "red"
        out.print(f"[{style}]{f.status:8}[/] {escape(f.file)}  sha256 {(f.actual_sha256 or '-')[:16]}"
                  + ("" if f.status == "ok" else f"  (manifest: {(f.expected_sha256 or '-')[:16]})"), highlight=False)
    for name in report.extra:
        out.print(f"[yellow]{'extra':8}[/] {escape(name)}  beside the artifact, named like its data, not in "
                  "the manifest (not read by the model; remove it if it is stale)", highlight=False)
    if report.provenance is not None:
        if report.provenance.get("statement"):
            checked = sig is not None and sig.status == "verified"
            for line in provenance_lines(report.provenance, checked=checked):
                out.print(line, highlight=False, soft_wrap=True)


def verify_failure(report: Any, err: Any) -> None:
    if not report.passed:
        where = f" (checksums in {report.manifest})" if any(f.status != "ok" for f in report.files) else ""
        err.print(f"[bold red]verify failed:[/] {escape('; '.join(report.problems) + where)}", highlight=False,
                  soft_wrap=True)


def sign_summary(report: Any, out: Any) -> None:
    """What was signed, with which key, and the gates the provenance records."""
    if not report.passed:
        return
    out.print(f"[green]signed[/] {escape(Path(report.model).name)} with key {report.key_fingerprint} "
              f"(OpenSSF model signing, {report.method})", highlight=False, soft_wrap=True)
    for c in report.covers:
        out.print(f"  {escape(c['file']):32} sha256 {c['sha256'][:16]}", highlight=False)
    out.print(f"  signature  {escape(report.signature)}", highlight=False, soft_wrap=True)
    out.print(f"  provenance {escape(report.provenance)}", highlight=False, soft_wrap=True)
    for gate in report.gates:
        out.print(f"  {escape(gate_sentence(gate, report.signed_utc))}", highlight=False, soft_wrap=True)


def signatures_table(rows: list[dict], hosts: list[str], out: Any) -> None:
    """`report merge`: per model, each host's signing key and first digest, and the verdict (only when
    some host signed something)."""
    if not any(r["verdict"] != "unsigned" for r in rows):
        return
    from rich.table import Table

    table = Table(title="signatures", title_justify="left", header_style="bold")
    table.add_column("model")
    for h in hosts:
        table.add_column(escape(h))
    table.add_column("verdict")
    style = {"consistent": "green", "inconsistent": "red", "unsigned": "yellow"}
    for r in rows:
        cells = []
        for h in hosts:
            c = r["hosts"].get(h)
            first = next(iter(c["digests"].values()), "") if c else ""
            cells.append("" if c is None else f"{c['status']} {(c['key_fingerprint'] or '-')[:19]} {first[:12]}")
        table.add_row(escape(r["model"]), *map(escape, cells), f"[{style[r['verdict']]}]{r['verdict']}[/]")
    out.print(table)
    for r in rows:
        for problem in r["problems"]:
            out.print(f"[red]signature[/] {escape(r['model'])}: {escape(problem)}", highlight=False, soft_wrap=True)
