"""One key of the config resolved into what its stage takes: paths against the config's folder,
specs, data domains, text files, keys, budgets; and a stage's options object built from its table
and validated, an error pointing at the key it came from. onnxtax.ci.config walks the file."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable

from onnxtax.ci.schema import ConfigText, suggest
from onnxtax.core.errors import ConfigError, OnnxtaxError
from onnxtax.parity.options import ParityOptions
from onnxtax.quantize.options import QuantizeOptions

# config key -> options field, per table (the file keeps its own words: `data`, `eval`, `ort`, ...)
KEY_ALIASES = {
    "parity": {"data": "data_files"},
    "quantize": {"eval": "evals", "format": "quant_format", "output": None},
    "runtimes": {"ort": "versions"},
    "lint": {"source": None},
    "model": {"data": "data_files"},
    "bench": {"data": "data_files"},
    "serve": {"dims": "request_dims"},
}


def stage_options(cls, table: dict, alias: dict[str, str | None], /, **resolved: Any):
    """A stage's options from a validated table: every key as the field it names (KEY_ALIASES), then
    the values the caller resolved (paths, parsed forms) over them; absent keys keep the defaults."""
    names = {f.name for f in fields(cls)}
    values = {}
    for key, value in table.items():
        name = alias.get(key, key)
        if name in names:
            values[name] = value
    return cls(**{**values, **resolved})


def built(src: ConfigText, where: tuple[str, ...], build: Callable[[], Any]) -> Any:
    """A stage's options built and validated (the checks the command runs on its flags); an error
    points at the key its flag stands for (`--allow 'x'` -> lint.allow), else at the table."""
    try:
        options = build()
        options.validate()
    except OnnxtaxError as exc:
        m = re.match(r"(?:unknown )?--([a-z][a-z0-9-]*)", exc.message)
        key = m.group(1).replace("-", "_") if m else None
        located = where + (key,) if key else where
        raise ConfigError(f"{src.where(located)}: {exc.message}", exc.hint) from exc
    return options


def signing_keys(data: dict, root: Path, src: ConfigText) -> tuple[Path | None, Path | None, bool]:
    """[sign] key and [verify] key/require_signature: the keys read now (a wrong kind, a missing file
    or two keys that are not a pair are config errors), paths against the config's folder."""
    from onnxtax.verify.keys import fingerprint, load_private_key, load_public_key

    sign_key = verify_key = None
    try:
        if "sign" in data:
            sign_key = (root / data["sign"]["key"]).resolve()
            signer = fingerprint(load_private_key(sign_key))
        vdata = data.get("verify") or {}
        if "key" in vdata:
            verify_key = (root / vdata["key"]).resolve()
            checker = fingerprint(load_public_key(verify_key))
    except OnnxtaxError as exc:
        where = ("sign", "key") if verify_key is None else ("verify", "key")
        raise ConfigError(f"{src.where(where)}: {exc.message}", exc.hint) from exc
    require = bool((data.get("verify") or {}).get("require_signature", False))
    if sign_key is not None and verify_key is not None and signer != checker:
        raise ConfigError(f"{src.where(('verify', 'key'))}: {verify_key.name} is not the public half of [sign] key "
                          f"{sign_key.name} ({checker} vs {signer})", "give the pair's public key, or drop [verify] key")
    if require and sign_key is None and verify_key is None:
        raise ConfigError(f"{src.where(('verify', 'require_signature'))}: a required signature needs a key to check",
                          "add [verify] key = \"PUBLIC.pem\" (or [sign] key, to sign here)")
    return sign_key, verify_key, require


def domains(table: dict, where: tuple[str, ...], input_names: list[str], root: Path, src: ConfigText
             ) -> tuple[dict[str, str], list[Path]]:
    """`ranges` and `data` of one table (a model's, or its parity table), checked."""
    from onnxtax.core.specs import parse_ranges

    ranges: dict[str, str] = {}
    for key, value in table.get("ranges", {}).items():
        text = value if isinstance(value, str) else f"{value[0]}:{value[1]}"
        kp = where + ("ranges", key)
        if key not in input_names:
            raise ConfigError(f"{src.where(kp)}: '{key}' is not an input of this model",
                              suggest(key, input_names, "inputs"))
        try:
            parse_ranges([f"{key}={text}"])
        except OnnxtaxError as exc:
            raise ConfigError(f"{src.where(kp)}: {exc.message}", 'write it as "LOW:HIGH", e.g. "0:1000"') from exc
        ranges[key] = text
    data_files = []
    for item in table.get("data", []):
        p = (root / item).resolve()
        if not p.is_file():
            raise ConfigError(f"{src.where(where + ('data',))}: data file '{item}' does not exist "
                              f"(looked at {p})", missing_data_hint(p, root))
        data_files.append(p)
    return ranges, data_files


def derived_inputs(spec: str) -> list:
    """The inputs an hf:/st: spec derives from its folder (no weights loaded)."""
    from onnxtax.core.hub import derive_hub

    return list(derive_hub(spec).inputs)


def text_files(table: dict, where: tuple[str, ...], root: Path, src: ConfigText) -> list:
    """`text` of one table: files of sentences, tokenized by the model's tokenizer (hf:/st: specs)."""
    from onnxtax.core.hub.text import TextFile

    out = []
    for item in table.get("text", []):
        p = (root / item).resolve()
        if not p.is_file():
            raise ConfigError(f"{src.where(where + ('text',))}: text file '{item}' does not exist (looked at {p})",
                              f"create it (one sentence a line), or fix the path (relative to {root})")
        out.append(TextFile(p, flag="text"))
    return out


def missing_data_hint(path: Path, root: Path) -> str:
    """The fix for a data file that is not there: the script beside the config that writes it (a
    file it names), else where relative paths start."""
    for script in sorted(root.glob("*.py")):
        try:
            text = script.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if path.name in text or (path.stem in text and "savez" in text):
            return f"{script.name} writes it: run `python {script.name}` in {root} first"
    return f"create it, or fix the path (relative paths start at the config's folder, {root})"


def resolve_spec(spec: str, root: Path, src: ConfigText, keypath: tuple[str, ...]) -> str:
    """A file spec relative to the config folder becomes absolute; its file must exist. An hf:/st: folder
    relative to the config folder becomes absolute too."""
    if spec.startswith(("hf:", "st:")):
        from onnxtax.core.hub.spec import parse_hub_spec

        try:
            hub = parse_hub_spec(spec)
        except OnnxtaxError as exc:
            raise ConfigError(f"{src.where(keypath)}: {exc.message}", exc.hint) from exc
        folder = (root / Path(hub.target).expanduser())
        if folder.exists():
            hub = type(hub)(hub.kind, str(folder.resolve()), hub.task, hub.flags)
        return hub.text()
    target, sep, name = spec.rpartition(":")
    if not sep or not target or not name or "/" in name or "\\" in name:
        raise ConfigError(f"{src.where(keypath)}: spec '{spec}' has no ':NAME'",
                          'write it as "path/to/file.py:NAME" or "package.module:NAME"')
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = (root / Path(target).expanduser()).resolve()
        if not path.is_file():
            raise ConfigError(f"{src.where(keypath)}: model file '{target}' does not exist (looked at {path})",
                              "spec paths are relative to the config file's folder")
        return f"{path}:{name}"
    return spec


def check_axes(dims: dict, specs: list, src: ConfigText, keypath: tuple[str, ...], check: Callable) -> None:
    from onnxtax.core.specs import symbols_of

    known = symbols_of(specs)
    for axis in dims:
        if axis not in known:
            hint = suggest(axis, known, "dynamic axes in inputs") if known else "no input declares a dynamic axis"
            raise ConfigError(f"{src.where(keypath + (axis,))}: '{axis}' names no dynamic axis of the inputs", hint)
    check(dims, specs)


def check_provider(text: str, src: ConfigText, keypath: tuple[str, ...]) -> None:
    from onnxtax.core.providers import parse_provider

    try:
        parse_provider(text)
    except OnnxtaxError as exc:
        raise ConfigError(f"{src.where(keypath)}: {exc.message}", exc.hint) from exc


def check_latency_key(key: str, src: ConfigText, keypath: tuple[str, ...]) -> None:
    stat, _, batch = key.partition("@")
    stats = ["p50", "p90", "p99", "max"]
    if stat not in stats or (batch and not batch.isdigit()):
        raise ConfigError(f"{src.where(keypath)}: '{key}' is not a latency gate",
                          suggest(stat, stats, "statistics") + " (optionally @BATCH, e.g. p99@1)")


def resolve_quantize(q: dict, root: Path, fp32_output: Path, src: ConfigText, where: tuple[str, ...],
                      parity: ParityOptions) -> tuple[QuantizeOptions, Path]:
    """Data files must exist; budgets must parse; the INT8 output may not overwrite the FP32 one."""
    from onnxtax.quantize.segments import parse_budgets

    def existing(item: str, key: str) -> Path:
        p = (root / item).resolve()
        if not p.is_file():
            raise ConfigError(f"{src.where(where + (key,))}: data file '{item}' does not exist (looked at {p})",
                              missing_data_hint(p, root))
        return p

    evals = [f"{name}={existing(item, 'eval')}" for name, item in q["eval"].items()]
    budgets = []
    for key, value in q["budgets"].items():
        if isinstance(value, dict):
            budgets += [f"{key}:{metric}={limit}" for metric, limit in value.items()]
        else:
            budgets.append(f"{key}={value}")
    try:
        parse_budgets(budgets)
    except OnnxtaxError as exc:
        raise ConfigError(f"{src.where(where + ('budgets',))}: {exc.message}", exc.hint) from exc
    for key, value in q["budgets"].items():
        if isinstance(value, dict) and key not in q["eval"] and q.get("segment_key") is None:
            raise ConfigError(f"{src.where(where + ('budgets', key))}: '{key}' is no segment of `eval`",
                              suggest(key, sorted(q["eval"]), "segments"))
    output = (root / q["output"]).resolve() if "output" in q else fp32_output.with_name(
        fp32_output.name[:-len(".onnx")] + ".int8.onnx")
    if output == fp32_output or output.suffix != ".onnx":
        raise ConfigError(f"{src.where(where + ('output',))}: the INT8 model needs its own .onnx path",
                          'e.g. output = "build/model.int8.onnx"')
    if q.get("mode") == "static" and not q.get("calibration"):
        raise ConfigError(f"{src.where(where + ('mode',))}: mode \"static\" needs `calibration` files",
                          'add calibration = ["data/calibration.npz"] (representative inputs, not the eval data)')
    options = built(src, where, lambda: stage_options(
        QuantizeOptions, q, KEY_ALIASES["quantize"], evals=evals, budgets=budgets,
        calibration=[existing(item, "calibration") for item in q.get("calibration", [])],
        providers=parity.providers, **{k: float(q[k]) for k in ("bench_min_time", "min_speedup") if k in q}))
    return options, output
