"""Real inputs from a text file: one sentence a line, tokenized by the model folder's own tokenizer.

A `TextFile` stands where a `.npz` data file stands (parity's data cases, export's smoke run,
quantize's evaluation segments and calibration, bench's inputs) and gives the same thing: a dict
of arrays keyed by input name, one batch (`input_ids`, `attention_mask` and, when the tokenizer
or the model has them, `token_type_ids`; padded to the longest line, as the tokenizer pads).
`specs.read_npz`, the one reader of data files, hands a TextFile to `TextFile.arrays`.

A stage binds text files to its model with `bind_text(model, files)`: a `.txt` (or a file given
with `--text`) is tokenized with an `hf:`/`st:` spec's tokenizer; for any other model it stays a
path, and the reader refuses it as a text file.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Sequence

from onnxtax.core.errors import InputSpecError

TEXT_SUFFIXES = (".txt", ".text")


class TextFile(os.PathLike):
    """A text file of sentences and the tokenizer that turns it into model inputs (`source`: a
    HubFolder; None until a stage binds it to its model). `flag` names it in errors."""

    def __init__(self, path: str | Path, source: Any = None, flag: str = "--text"):
        self.path = Path(path)
        self.source = source
        self.flag = flag
        self._arrays: dict | None = None
        self.lines = 0
        self.truncated = 0

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"TextFile({str(self.path)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, (TextFile, Path, str)) and Path(os.fspath(other)) == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    name = property(lambda self: self.path.name)
    stem = property(lambda self: self.path.stem)
    suffix = property(lambda self: self.path.suffix)

    def is_file(self) -> bool:
        return self.path.is_file()

    def bound(self, source: Any) -> "TextFile":
        return self if self.source is not None else TextFile(self.path, source, self.flag)

    def arrays(self, flag: str | None = None) -> dict:
        """The tokenized lines as {input name: int64 array [lines, tokens]} (made once)."""
        if self._arrays is None:
            where = f"{self.flag if self.flag != '--data' else flag or self.flag} {self.path}"
            lines = read_lines(self.path, where)
            if self.source is None:
                raise InputSpecError(f"{where}: a text file is tokenized for an hf:DIR or st:DIR model, and this "
                                     "model is given another way", "give the model as hf:DIR or st:DIR, or the "
                                     "inputs as an .npz (np.savez(path, input_name=array, ...))")
            self._arrays, self.truncated = tokenize(self.source, lines, where)
            self.lines = len(lines)
        return dict(self._arrays)


def read_lines(path: Path, where: str) -> list[str]:
    """The file's sentences: every line, none of them empty; a file that is no text is refused."""
    if path.is_dir():
        raise InputSpecError(f"{where} is a folder, not a text file", "give a file with one sentence a line")
    if not path.is_file():
        raise InputSpecError(f"{where}: file not found", "give a text file with one sentence a line")
    raw = path.read_bytes()
    if raw.startswith((b"PK", b"\x93NUMPY")):
        raise InputSpecError(f"{where} is a numpy archive, not a text file", "give it with --data instead")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputSpecError(f"{where} is not UTF-8 text (byte {exc.start}: {raw[exc.start:exc.start + 1]!r})",
                             "save the sentences as UTF-8, one a line") from exc
    if "\x00" in text:
        raise InputSpecError(f"{where} is a binary file (it holds NUL bytes), not text",
                             "give a text file with one sentence a line")
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()  # trailing blank lines end the file; they are not sentences
    if not lines:
        raise InputSpecError(f"{where} is empty: no sentence to tokenize", "write one sentence a line")
    empty = [i + 1 for i, line in enumerate(lines) if not line.strip()]
    if empty:
        shown = ", ".join(map(str, empty[:8])) + (", ..." if len(empty) > 8 else "")
        raise InputSpecError(f"{where}: line{'s' if len(empty) > 1 else ''} {shown} "
                             f"{'are' if len(empty) > 1 else 'is'} empty ({len(empty)} of {len(lines)} lines)",
                             "remove the empty lines: every line is one input row")
    return [line.strip() for line in lines]


@functools.lru_cache(maxsize=8)
def load_tokenizer(folder: Path, trust_remote_code: bool = False) -> Any:
    """The folder's tokenizer, offline; a tokenizer without a padding token pads with its end token."""
    from onnxtax.core.hub.offline import offline_transformers

    transformers = offline_transformers()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True,
                                                               trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001 - transformers raises OSError, ValueError, KeyError here
        raise InputSpecError(f"the tokenizer in {folder} cannot be loaded: {type(exc).__name__}: "
                             f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}",
                             "save it again with tokenizer.save_pretrained(DIR)") from exc
    if tokenizer.pad_token is None and getattr(tokenizer, "eos_token", None) is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def max_length(source: Any, tokenizer: Any) -> int | None:
    """What the pipeline truncates to: the sentence-transformers max_seq_length, else the smaller of
    the tokenizer's and the position table's limits."""
    limits = [source.max_seq_length] if source.max_seq_length else []
    model_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(model_max, int) and 0 < model_max < 10**9:
        limits.append(model_max)
    for key in ("max_position_embeddings", "n_positions"):
        value = source.config.get(key)
        if isinstance(value, int) and value > 0:
            limits.append(value)
            break
    return min(limits) if limits else None


def tokenize(source: Any, lines: Sequence[str], where: str) -> tuple[dict, int]:
    """({input name: int64 array}, lines truncated) for these lines, padded to the longest."""
    import numpy as np

    if not source.has_tokenizer:
        raise InputSpecError(f"{where}: {source.path} has no tokenizer (no tokenizer.json, vocab.txt, vocab.json or "
                             "sentencepiece model)", "save the tokenizer into the model folder "
                             "(tokenizer.save_pretrained(DIR)), or give the inputs as an .npz with --data")
    tokenizer = load_tokenizer(source.path, source.spec.trust_remote_code)
    limit = max_length(source, tokenizer)
    full = tokenizer(list(lines), truncation=False, padding=False)["input_ids"]
    encoded = tokenizer(list(lines), padding="longest", truncation=limit is not None, max_length=limit,
                        return_tensors="np")
    arrays = {k: np.asarray(v).astype(np.int64) for k, v in encoded.items()
              if k in ("input_ids", "attention_mask", "token_type_ids")}
    if "token_type_ids" not in arrays:  # one segment: type 0 everywhere (what BERT-like models assume)
        arrays["token_type_ids"] = np.zeros_like(arrays["input_ids"])
    if "attention_mask" not in arrays:
        arrays["attention_mask"] = np.ones_like(arrays["input_ids"])
    truncated = sum(1 for ids in full if limit is not None and len(ids) > limit)
    return arrays, truncated


def is_text_path(path: Any) -> bool:
    return isinstance(path, TextFile) or Path(os.fspath(path)).suffix.lower() in TEXT_SUFFIXES


def text_source(model: Any) -> Any:
    """The HubFolder whose tokenizer reads text files for `model` (a spec string or a LoadedModel),
    or None for a model given any other way."""
    from onnxtax.core.hub.spec import is_hub_spec, open_folder, parse_hub_spec

    hub = getattr(model, "hub", None)
    if hub is not None:
        return hub.folder
    if is_hub_spec(model):
        return open_folder(parse_hub_spec(model))
    return None


def bind_text(model: Any, files: Sequence[Any] | None, flag: str = "--data") -> list:
    """`files` with every text file (a `.txt`, or given with --text) bound to `model`'s tokenizer."""
    files = list(files or [])
    if not any(is_text_path(f) for f in files):
        return files
    source = text_source(model)
    out = []
    for f in files:
        if isinstance(f, TextFile):
            out.append(f.bound(source) if source is not None else f)
        elif is_text_path(f):
            out.append(TextFile(f, source, flag) if source is not None else f)
        else:
            out.append(f)
    return out


def tokenizer_record(source: Any) -> dict | None:
    """What a native host needs to tokenize the same way: the tokenizer's files with their sha256,
    its class, padding side and the length it truncates to (None when the folder has no tokenizer)."""
    from onnxtax.core.files import sha256_file

    if not source.has_tokenizer:
        return None
    config = source.tokenizer_config()
    return {"folder": str(source.path),
            "files": [{"file": p.name, "sha256": sha256_file(p), "size_bytes": p.stat().st_size}
                      for p in source.tokenizer_files],
            "class": config.get("tokenizer_class"),
            "padding_side": config.get("padding_side", "right"),
            "do_lower_case": config.get("do_lower_case"),
            "max_length": source.max_seq_length or config.get("model_max_length")}
