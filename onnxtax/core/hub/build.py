"""An `hf:`/`st:` spec -> what it derives (task, class, inputs, ranges) and the module every stage runs.

`derive_hub` reads the folder and the transformers class (no weights loaded): the task, the
class, the inputs in forward() order, their value ranges. `build_hub_module` builds the model once,
offline, in float32 and eval mode, behind a thin module whose forward() takes the derived inputs
by name, positionally (what torch.export, torch.onnx and every stage call it with), and returns
the model's outputs by their own names (`last_hidden_state`, `logits`; for st:
`token_embeddings` and `sentence_embedding`). A folder without weights, weights that lack part of
the task's model, and a folder whose config asks for its own code are refused, each with the way
to allow it.
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass, field
from typing import Any

from onnxtax.core.errors import LoadError
from onnxtax.core.hub.offline import offline_transformers
from onnxtax.core.hub.spec import HubFolder, HubSpec, open_folder, parse_hub_spec
from onnxtax.core.hub.tasks import (DROPPED_OUTPUTS, TASKS, Task, image_inputs, resolve_task, text_inputs,
                                    text_ranges)
from onnxtax.core.specs import InputSpec, ValueRange

@dataclass
class HubModel:
    """What an hf:/st: spec derives; recorded in the manifest as `derived`."""

    spec: HubSpec
    folder: HubFolder
    task: str  # a TASKS name, or "sentence-embedding" for st:
    model_class: str
    inputs: list[InputSpec]
    ranges: dict[str, ValueRange]
    pipeline: dict | None = None  # st: pooling modes, normalisation, max_seq_length
    output_names: list[str] = field(default_factory=list)  # filled once the model has run
    weights: list[str] = field(default_factory=list)
    source_file: str | None = None

    def to_dict(self) -> dict:
        from onnxtax.core.hub.text import tokenizer_record

        return {"kind": self.spec.kind, "folder": str(self.folder.path), "task": self.task,
                "model_class": self.model_class, "model_type": self.folder.config.get("model_type"),
                "architectures": self.folder.config.get("architectures"),
                "inputs": [s.to_dict() for s in self.inputs],
                "ranges": {k: v.to_dict() for k, v in self.ranges.items()},
                "output_names": list(self.output_names), "pipeline": self.pipeline,
                "primary_output": "sentence_embedding" if self.spec.kind == "st" else None,
                "weights": list(self.weights), "random_init": self.spec.random_init,
                "trust_remote_code": self.spec.trust_remote_code, "tokenizer": tokenizer_record(self.folder)}


def _where(spec: HubSpec) -> str:
    return f"{spec.kind}:{spec.target}"


def _config_and_class(folder: HubFolder, task: Task, transformers: Any) -> tuple[Any, Any]:
    """The transformers config object and the class the task builds from it."""
    spec = folder.spec
    remote = folder.remote_code
    if remote and not spec.trust_remote_code:
        files = sorted({str(v).split(".")[0] + ".py" for v in remote.values() if isinstance(v, str)})
        raise LoadError(f"{_where(spec)} needs trust_remote_code: its config.json maps "
                        f"{', '.join(sorted(remote))} to code in the folder ({', '.join(files)}), which would run "
                        "on load", "read that code; if you trust it, pass --trust-remote-code")
    try:
        config = transformers.AutoConfig.from_pretrained(str(folder.path), local_files_only=True,
                                                         trust_remote_code=spec.trust_remote_code)
    except Exception as exc:  # noqa: BLE001 - ValueError/KeyError for an unknown model_type
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise LoadError(f"{_where(spec)}: transformers {transformers.__version__} cannot read its config.json "
                        f"(model_type {folder.config.get('model_type')!r}): {first}",
                        "upgrade transformers, or save the model with this version") from exc
    auto = getattr(transformers, task.auto_class)
    if remote and task.auto_class in remote:
        from transformers.dynamic_module_utils import get_class_from_dynamic_module

        return config, get_class_from_dynamic_module(remote[task.auto_class], str(folder.path),
                                                     local_files_only=True)
    try:
        cls = auto._model_mapping[type(config)]
    except (KeyError, ValueError) as exc:
        raise LoadError(f"{_where(spec)}: transformers has no {task.name} model for model_type "
                        f"{folder.config.get('model_type')!r} ({task.auto_class})",
                        "name another task after '#' (tasks: " + ", ".join(TASKS) + ")") from exc
    return config, cls


def derive_hub(spec: str | HubSpec) -> HubModel:
    """The task, class, inputs and ranges a hub spec stands for, without loading weights."""
    spec = parse_hub_spec(spec) if isinstance(spec, str) else spec
    folder = open_folder(spec)
    transformers = offline_transformers()
    where = _where(spec)
    if spec.kind == "st":
        _check_st_modules(folder)
        task = TASKS["feature-extraction"]
    else:
        task = resolve_task(spec.task, folder.config, where)
    _config, cls = _config_and_class(folder, task, transformers)
    params = list(inspect.signature(cls.forward).parameters)
    inputs = image_inputs(folder.config) if task.modality == "image" else text_inputs(params, folder.config, task)
    padding = folder.tokenizer_config().get("padding_side", "right") if folder.has_tokenizer else None
    ranges = text_ranges(inputs, folder.config, padding) if task.modality == "text" else {}
    pipeline = None
    if spec.kind == "st":
        from onnxtax.core.hub.sentence import pooling_modes

        pipeline = {"modules": [m["type"] for m in folder.modules], "pooling": pooling_modes(folder.pooling or {}),
                    "normalize": any(m["type"].endswith(".Normalize") for m in folder.modules),
                    "max_seq_length": folder.max_seq_length}
    try:
        source_file = inspect.getsourcefile(cls)
    except TypeError:
        source_file = None
    return HubModel(spec, folder, "sentence-embedding" if spec.kind == "st" else task.name, cls.__name__, inputs,
                    ranges, pipeline, weights=[p.name for p in folder.weights], source_file=source_file)


def _check_st_modules(folder: HubFolder) -> None:
    known = (".Transformer", ".Pooling", ".Normalize")
    other = [m["type"] for m in folder.modules if not m["type"].endswith(known)]
    if other:
        raise LoadError(f"st:{folder.spec.target}: its pipeline has {', '.join(other)}, which onnxtax does not build "
                        "(it builds Transformer, Pooling and Normalize)",
                        f"export the transformer alone with hf:{folder.spec.target}, or wrap the pipeline in an "
                        "nn.Module file")
    if not any(m["type"].endswith(".Transformer") for m in folder.modules):
        raise LoadError(f"st:{folder.spec.target}: its modules.json has no Transformer module",
                        "save the folder again with SentenceTransformer.save")


@contextlib.contextmanager
def _seeded():
    """Weights made here (--random-init, or a head the checkpoint lacks) are the same in every
    process: export, parity and bench must build one model."""
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(0)
        yield


def _load_weights(hub: HubModel, cls: Any, config: Any) -> Any:
    import torch

    spec = hub.spec
    where = _where(spec)
    if not hub.folder.weights:
        if not spec.random_init:
            raise LoadError(f"{where}: {hub.folder.path} has no weights (no model.safetensors or "
                            "pytorch_model.bin): the model would be random", "save the weights with "
                            "model.save_pretrained(DIR), or pass --random-init to export a model initialised from "
                            "a fixed seed (for tests of the pipeline only)")
        with _seeded():
            return cls._from_config(config, dtype=torch.float32)
    try:
        with _seeded():
            model, info = cls.from_pretrained(str(hub.folder.path), config=config, local_files_only=True,
                                              dtype=torch.float32, output_loading_info=True,
                                              trust_remote_code=spec.trust_remote_code)
    except Exception as exc:  # noqa: BLE001 - a damaged or mismatched checkpoint
        first = str(exc).strip().splitlines()[0][:240] if str(exc).strip() else type(exc).__name__
        raise LoadError(f"{where}: loading the weights in {hub.folder.path} failed: {type(exc).__name__}: {first}",
                        "save the model again with save_pretrained") from exc
    missing = list(info.get("missing_keys") or [])
    if missing and not spec.random_init:
        shown = ", ".join(sorted(missing)[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        raise LoadError(f"{where}: the weights lack {shown}: {hub.model_class} for {hub.task} would initialise "
                        "them at random", "name the task the weights were saved for after '#' "
                        f"(config.json: {', '.join(hub.folder.config.get('architectures') or ['?'])}), or pass "
                        "--random-init to initialise them from a fixed seed")
    return model


def build_hub_module(hub: HubModel) -> Any:
    """The eval-mode module the stages run: the derived inputs in, the named outputs out."""
    transformers = offline_transformers()
    task = TASKS["feature-extraction"] if hub.spec.kind == "st" else TASKS[hub.task]
    config, cls = _config_and_class(hub.folder, task, transformers)
    model = _load_weights(hub, cls, config)
    model.eval()
    names = [s.name for s in hub.inputs]
    if hub.spec.kind == "st":
        from onnxtax.core.hub.sentence import SentencePipeline

        inner: Any = SentencePipeline(model, hub.pipeline or {})
        call: dict = {}
        class_name = "SentenceTransformer"
    else:
        inner = model
        call = {"return_dict": True}
        if task.name == "causal-lm":
            call["use_cache"] = False
        class_name = hub.model_class
    module = named_forward(class_name, names)(inner, names, call)
    module.eval()
    return module


def named_forward(class_name: str, names: list[str]) -> type:
    """A module class whose forward(self, NAME, ...) calls the model with those inputs by name.
    The names come from the task table (identifiers), never from a user's text."""
    import torch

    assert all(n.isidentifier() for n in names)
    namespace: dict[str, Any] = {}
    exec(f"def forward(self, {', '.join(names)}):\n    return self.answer({', '.join(names)})\n",  # noqa: S102
         namespace)

    def __init__(self, model, input_names, call):
        torch.nn.Module.__init__(self)
        self.model = model
        self.input_names = list(input_names)
        self.call = dict(call)

    def answer(self, *args):
        out = self.model(**dict(zip(self.input_names, args)), **self.call)
        return {k: v for k, v in out.items() if k not in DROPPED_OUTPUTS and v is not None}

    return type(class_name, (torch.nn.Module,), {"__init__": __init__, "forward": namespace["forward"],
                                                 "answer": answer, "__module__": __name__})
