"""An export rendered: what was written, its inputs and outputs, the checks and warnings."""

from __future__ import annotations



def dims_text(dims: list) -> str:
    from rich.markup import escape

    return escape("[" + ", ".join("?" if d is None else str(d) for d in dims) + "]")


def export_table(result, out) -> None:
    from rich.markup import escape
    from rich.table import Table

    from onnxtax.core.report import format_size

    if result.passed:
        out.print(f"[bold green]exported[/] {escape(result.output)}  ({result.exporter} exporter, opset {result.opset}, "
                      f"IR {result.ir_version}, {format_size(result.size_bytes)}, {result.seconds:.1f} s)",
                      highlight=False, soft_wrap=True)  # a long path stays whole in a log
        table = Table(box=None, pad_edge=False)
        for col in ("", "name", "dims", "dtype"):
            table.add_column(col)
        for kind, items in (("input", result.inputs), ("output", result.outputs)):
            for item in items:
                table.add_row(kind, escape(item["name"]), dims_text(item["dims"]), item["dtype"])
        out.print(table)
    checks = Table(box=None, pad_edge=False, show_header=False)
    checks.add_column()
    checks.add_column()
    checks.add_column(overflow="fold")
    for c in result.checks:
        mark = "[dim]skip[/]" if c.passed is None else "[green]pass[/]" if c.passed else "[red]fail[/]"
        checks.add_row(mark, c.name, escape(c.detail))
    if result.checks:
        out.print(checks)
    defaults = [f"{name}: {how}" for name, how in result.domains.items() if "default for" in how]
    if defaults:
        out.print(f"[dim]integer inputs drawn from name-based defaults: {escape('; '.join(defaults))} "
                      "(--range sets them)[/]", highlight=False, soft_wrap=True)
    for w in result.warnings:
        out.print(f"[yellow]warning:[/] {escape(w)}", highlight=False, soft_wrap=True)
    if result.passed:
        from onnxtax.core.manifest import manifest_path_for

        out.print(f"manifest: {escape(str(manifest_path_for(result.output)))}", highlight=False)
