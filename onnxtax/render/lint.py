"""lint-ops' report rendered: the findings table and the verdict line (SARIF: onnxtax.render.sarif)."""

from __future__ import annotations


MAX_ROWS_PER_RULE = 25
SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def lint_table(report, out) -> None:
    """Findings grouped by rule, then what was allowed, then one verdict line."""
    from rich.markup import escape
    from rich.table import Table

    from onnxtax.lint import RULES

    info = report.model_info
    opsets = ", ".join(f"{d or 'ai.onnx'} {v}" for d, v in info.get("opsets", {}).items())
    rt = report.runtime
    if not info:  # source rules only, no .onnx file
        out.print(f"[bold]{escape((report.source or {}).get('spec') or 'source')}[/]  source rules only "
                      "(no .onnx file)", highlight=False, soft_wrap=True)
    else:
        out.print(f"[bold]{escape(report.model)}[/]  IR {info.get('ir_version')}, {opsets}, "
                      f"{info.get('nodes')} nodes" + (f" ({info['subgraphs']} subgraphs)" if info.get("subgraphs") else "")
                      + f"  | {rt.get('package')} {rt.get('version')} "
                      + ("loads it" if rt.get("loads_model") else "[red]refuses it[/]"), highlight=False,
                      soft_wrap=True)
    for checked in report.providers.get("checked", []):
        pl = checked.get("placement")
        if pl:
            out.print(f"placement on {escape(checked['label'])}: {pl['on_provider']}/{pl['total_nodes']} nodes "
                          f"on the provider, {pl['fallback']} elsewhere", highlight=False, soft_wrap=True)
    active = [f for f in report.findings if not f.allowed]
    for rule_id in RULES:
        group = [f for f in active if f.rule == rule_id]
        if not group:
            continue
        table = Table(title=f"{rule_id} ({len(group)})", title_justify="left", title_style="bold", box=None,
                      pad_edge=False, show_header=True, expand=False)
        table.add_column("severity", no_wrap=True)
        table.add_column("where", overflow="fold", max_width=38)
        table.add_column("op", overflow="fold", max_width=28)
        table.add_column("message", overflow="fold", ratio=1)
        last_hint = None
        for f in group[:MAX_ROWS_PER_RULE]:
            where = f.where or ""
            if f.source_location:
                where = f"{where}\n{_short_path(f.source_location)}" if where else _short_path(f.source_location)
            op = ""
            if f.op_type:
                op = f.op_type if f.domain in (None, "", "ai.onnx") else f"{f.domain}::{f.op_type}"
            text = escape(f.message)
            if f.hint and f.hint != last_hint:
                text += f"\n[dim]fix: {escape(f.hint)}[/]"
                last_hint = f.hint
            table.add_row(f"[{SEVERITY_STYLE[f.severity]}]{f.severity}[/]", escape(where), escape(op), text)
        if len(group) > MAX_ROWS_PER_RULE:
            table.add_row("", f"… {len(group) - MAX_ROWS_PER_RULE} more", "", "see --json for all")
        out.print(table)
        out.print()
    if report.allowed:
        by_entry: dict[str, int] = {}
        for f in report.allowed:
            key = f"{f.rule}:{f.where}" if f.where else f.rule
            by_entry[key] = by_entry.get(key, 0) + 1
        out.print(f"[dim]allowed ({len(report.allowed)}, --allow {escape(', '.join(report.allow))}):[/] "
                      + escape(", ".join(f"{k}" + (f" x{n}" if n > 1 else "") for k, n in by_entry.items())),
                      highlight=False, soft_wrap=True)
    for note in report.notes:
        out.print(f"[dim]note: {escape(note)}[/]", highlight=False, soft_wrap=True)
    if report.source:
        src = report.source
        out.print(f"[dim]source: traced {escape(str(src.get('spec')))} with "
                      f"{escape(', '.join(src.get('inputs', [])))} "
                      f"in {src.get('seconds', 0):.1f} s[/]", highlight=False, soft_wrap=True)
    counts = report.counts()
    parts = [f"{counts[s]} {s}{'s' if counts[s] != 1 and s != 'info' else ''}" for s in ("error", "warning", "info")]
    if counts["allowed"]:
        parts.append(f"{counts['allowed']} allowed")
    verdict = "[bold green]passed[/]" if report.passed else f"[bold red]failed[/] ({counts['failing']} at or above " \
                                                             f"{report.fail_on})"
    out.print(f"lint-ops: {', '.join(parts)} -> {verdict}  [{report.seconds:.1f} s]", highlight=False)


def _short_path(location: str) -> str:
    import os

    path, _, line = location.rpartition(":")
    try:
        rel = os.path.relpath(path)
        if not rel.startswith(".."):
            path = rel
    except ValueError:
        pass
    return f"{path}:{line}"
