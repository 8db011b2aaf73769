"""Exporter failures explained: one line naming the problem (and the user's source line), and the fix.

torch.onnx fails with a chain of internal exceptions several screens long; the user needs
the construct that blocks the export and a way around it.
"""

from __future__ import annotations

import re
from typing import Any


def explain_export_error(exc: BaseException, source_file: str | None, module: Any = None,
                         specs: Any = None) -> tuple[str, str]:
    """Turn an exporter failure into (one-line problem, fix); `specs` (the InputSpecs) name the axis
    torch.export names by position."""
    chain: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    text = "\n".join(f"{type(x).__name__}: {x}" for x in chain)
    location = _user_location(text, chain, source_file)
    at = f" at {location}" if location else ""
    if re.search(r"GuardOnDataDependentSymNode|data-dependent|data dependent", text):
        branch = _branch_location(text, chain, source_file)
        at = f" at {branch}" if branch else at
        return (f"data-dependent control flow{at}: the model branches on a tensor's value, which one ONNX "
                f"graph cannot express",
                "rewrite the branch with torch.cond (it becomes an ONNX If), compute both sides and select with "
                "torch.where, or move the decision out of the model; `onnxtax lint-ops --source` finds them all")
    m = (re.search(r"No ONNX function found for <OpOverload\(op='([\w.]+)'", text)
         or re.search(r"unrecognized namespace ([\w.]+::\w+)", text)
         or re.search(r"[Uu]nsupported (?:operator|op)[^\n]*?'?([\w.]+::[\w.]+)'?", text)
         or re.search(r"No ONNX function found for[^\n]*?([\w]+\.[\w]+\.\w+)", text))
    if m:
        op = m.group(1)
        if "::" not in op and op.count(".") >= 1:
            ns, name = op.split(".", 1)
            op = f"{ns}::{name.split('.')[0]}"
        return (f"operator {op}{at} has no ONNX translation",
                f"ways forward: rewrite {op} with standard torch ops; or give export_model("
                f"custom_translation_table={{...}}) an onnxscript function for it (dynamo exporter); or emit a "
                f"custom-domain node and ship an ONNX Runtime custom-op library that implements it")
    static = re.search(r"inferred a static shape of (\d+) for dimension ([^\n]*?)\.?\s*$", text, re.M)
    if static:  # a Python loop or int() over a dynamic size: torch.export keeps the traced value
        return (f"torch.export could not keep the declared dynamic axes{at}: the model fixes "
                f"{static.group(2)}{_axis_named(static.group(2), specs)} at its export size {static.group(1)}",
                "find the code that turns that size into a Python number (a loop like `for i in "
                "range(x.shape[1])`, int(), a list of that length) and compute with tensor ops instead; or "
                "declare that axis static in --input")
    if "Constraints violated" in text or "ConstraintViolation" in text:
        first = next((line for line in text.splitlines() if "Constraints violated" in line or "must be" in line),
                     text.splitlines()[0])
        return (f"torch.export could not keep the declared dynamic axes{at}: {first.strip()[:300]}",
                "check which axis the model treats as fixed; declare it static in --input, or change the code "
                "that specialises it")
    first = _first_statement(str(chain[-1])) or type(chain[-1]).__name__
    if "Cannot view a tensor with shape" in text and (_uses_sdpa(module) or _in_traceback(
            chain, "scaled_dot_product_attention", "sdpa")):
        return (f"the exporter could not decompose scaled-dot-product attention with a float attention mask{at}: "
                f"{first.strip()[:200]}",
                "load the model with attn_implementation=\"eager\" (e.g. from_pretrained(..., "
                "attn_implementation=\"eager\"), or set config._attn_implementation = \"eager\" before building it), "
                "or export with --exporter torchscript")
    step = _failed_step(chain)
    return (f"the export failed while {step}{at}: {first.strip()[:300]}",
            "run with --debug for the full traceback; try --exporter torchscript or another --opset")


def _axis_named(where: str, specs: Any) -> str:
    """" (axis seq)" for torch.export's `inputs['x'].shape[1]` when --input named that axis."""
    m = re.fullmatch(r"inputs\[['\"](\w+)['\"]\]\.shape\[(\d+)\]", where.strip())
    spec = next((s for s in specs or [] if m and s.name == m.group(1)), None)
    if spec is None or int(m.group(2)) >= len(spec.dims) or not isinstance(spec.dims[int(m.group(2))], str):
        return ""
    return f" (axis {spec.dims[int(m.group(2))]})"


def _first_statement(message: str) -> str:
    """The first line of an exception's message; when it ends with ':' (a list follows), the
    lines it introduces as well, so the part naming the user's value is not cut off."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    if not lines:
        return ""
    out = lines[0]
    for line in lines[1:]:
        if not out.endswith(":") and not line.startswith(("-", "*")):
            break
        out += " " + line
    return out


def _uses_sdpa(module: Any) -> bool:
    """A Hugging Face model configured for torch's scaled_dot_product_attention (the default in transformers)."""
    if module is None:
        return False
    return any(getattr(getattr(m, "config", None), "_attn_implementation", None) == "sdpa" for m in module.modules())


def _failed_step(chain: list[BaseException]) -> str:
    """The exporter's step that failed, named from torch.onnx's own error types, never a bare class name."""
    names = {type(e).__name__ for e in chain}
    if "TorchExportError" in names:
        return "capturing the graph with torch.export"
    if "ConversionError" in names:
        return "translating the captured graph to ONNX"
    if any("jit" in type(e).__module__ or "Tracer" in type(e).__name__ for e in chain):
        return "tracing the model"
    return "exporting"


def _in_traceback(chain: list[BaseException], *words: str) -> bool:
    """Whether any frame of the failure ran a function or file named with one of `words`."""
    import traceback

    for e in chain:
        for fr in traceback.extract_tb(e.__traceback__):
            where = f"{fr.filename} {fr.name} {fr.line or ''}".lower()
            if any(w in where for w in words):
                return True
    return False


_BRANCH_CODE = re.compile(r"^\s*(if|elif|while|assert)\b|\bif\b.*\belse\b|\bbool\(|\.item\(\)")
_TORCH_OR_OURS = re.compile(r"[/\\]torch[/\\]|[/\\]onnxscript[/\\]|[/\\]onnxtax[/\\]|^<")


def _branch_location(text: str, chain: list[BaseException], source_file: str | None) -> str | None:
    """The frame holding a data-dependent branch: the innermost frame outside torch whose line
    branches, the user's or a library's (a guard raised deep in a detection model's
    post-processing); then the user's line that called into the library."""
    from onnxtax.core.frames import frames_in_text, frames_of, user_frame

    frames = frames_in_text(text) + [f for e in chain for f in frames_of(e)]
    outside = [f for f in frames if not _TORCH_OR_OURS.search(f.file)]
    branching = [f for f in outside if _BRANCH_CODE.search(f.code)]
    if not branching:
        return None
    frame = branching[-1]
    where = f"{frame.location} `{frame.code}`"
    caller = user_frame(frames, source_file)
    if caller is not None and caller.file != frame.file:
        where += f" (called from {caller.location})"
    return where


def _user_location(text: str, chain: list[BaseException], source_file: str | None) -> str | None:
    """The user's file:line from torch's message ('File "x.py", line 8') or else the traceback."""
    from onnxtax.core.frames import frames_in_text, frames_of, user_frame

    frame = (user_frame(frames_in_text(text), source_file)
             or user_frame([f for e in chain for f in frames_of(e)], source_file))
    if frame is None:
        return None
    return frame.location + (f" `{frame.code}`" if frame.code else "")
