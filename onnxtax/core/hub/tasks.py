"""The tasks an `hf:` spec can name, and what each derives: the transformers class, the inputs
(names, dims, dtypes), their value ranges, the outputs kept.

A task is inferred from `config.architectures` when the spec names none (`BertModel` ->
feature-extraction, `...ForSequenceClassification` -> sequence-classification, ...).
Kept free of torch and transformers (the classes are named, imported where the model is built).
"""

from __future__ import annotations

from dataclasses import dataclass

from onnxtax.core.errors import LoadError
from onnxtax.core.specs import InputSpec, ValueRange

TEXT_AXES = ("batch", "sequence")


@dataclass(frozen=True)
class Task:
    name: str
    auto_class: str  # the transformers Auto class that builds it
    modality: str  # "text" or "image"
    suffixes: tuple[str, ...]  # architecture name endings this task is inferred from
    note: str


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("feature-extraction", "AutoModel", "text", ("Model", "EncoderModel"),
         "the base model's hidden states (and pooler output where it has one)"),
    Task("sequence-classification", "AutoModelForSequenceClassification", "text", ("ForSequenceClassification",),
         "one row of class logits per sequence"),
    Task("token-classification", "AutoModelForTokenClassification", "text", ("ForTokenClassification",),
         "class logits per token"),
    Task("causal-lm", "AutoModelForCausalLM", "text", ("ForCausalLM", "LMHeadModel"),
         "next-token logits over the whole sequence, without a KV cache"),
    Task("image-classification", "AutoModelForImageClassification", "image", ("ForImageClassification",),
         "class logits per image"),
)}
ALIASES = {"text-classification": "sequence-classification", "text-generation": "causal-lm", "ner": "token-classification",
           "feature_extraction": "feature-extraction", "default": "feature-extraction"}
# output fields of a transformers ModelOutput that are not the model's answer (a cache, a loss, the
# per-layer states asked for with output_hidden_states / output_attentions)
DROPPED_OUTPUTS = ("loss", "past_key_values", "hidden_states", "attentions", "cross_attentions")


def task_names() -> str:
    return ", ".join(TASKS)


def resolve_task(explicit: str | None, config: dict, where: str) -> Task:
    """The spec's `#task`, else the one config.architectures implies."""
    if explicit is not None:
        name = ALIASES.get(explicit, explicit)
        if name not in TASKS:
            import difflib

            close = difflib.get_close_matches(name, list(TASKS), n=1)
            raise LoadError(f"{where}: unknown task '{explicit}'",
                            (f"did you mean #{close[0]}? " if close else "") + f"tasks: {task_names()}")
        return TASKS[name]
    architectures = config.get("architectures") or []
    if not architectures:
        model_type = config.get("model_type")
        if model_type in ("vit", "resnet", "convnext", "deit", "mobilenet_v2", "efficientnet", "swin", "beit"):
            return TASKS["image-classification"]
        return TASKS["feature-extraction"]
    arch = str(architectures[0])
    # the longest ending wins: BertForSequenceClassification before ...Model
    ranked = sorted(((s, t) for t in TASKS.values() for s in t.suffixes), key=lambda p: -len(p[0]))
    for suffix, task in ranked:
        if arch.endswith(suffix):
            if suffix == "Model" and arch.endswith(("PreTrainedModel", "ForMaskedLM")):
                continue
            return task
    raise LoadError(f"{where}: config.json's architecture {arch} is no task onnxtax derives",
                    f"name one after '#': tasks: {task_names()}")


def text_inputs(forward_parameters: list[str], config: dict, task: Task) -> list[InputSpec]:
    """input_ids and attention_mask [batch, sequence] int64, and token_type_ids where the model takes
    them and its config has token types (BERT-like; not for causal LMs)."""
    specs = [InputSpec("input_ids", TEXT_AXES, "int64")]
    if "attention_mask" in forward_parameters:
        specs.append(InputSpec("attention_mask", TEXT_AXES, "int64"))
    if "token_type_ids" in forward_parameters and task.name != "causal-lm" and config.get("type_vocab_size"):
        specs.append(InputSpec("token_type_ids", TEXT_AXES, "int64"))
    return specs


def image_inputs(config: dict) -> list[InputSpec]:
    """pixel_values [batch, channels, height, width] float32: the batch dynamic, the image size the
    config gives (position embeddings are made for it)."""
    size = config.get("image_size", 224)
    height, width = (size, size) if isinstance(size, int) else (list(size) + [224, 224])[:2]
    channels = int(config.get("num_channels", 3))
    return [InputSpec("pixel_values", ("batch", channels, int(height), int(width)), "float32")]


def text_ranges(specs: list[InputSpec], config: dict, padding_side: str | None) -> dict[str, ValueRange]:
    """Token ids below the vocabulary size, token types below the type vocabulary size, masks of
    ones, or right-padded rows when the folder's tokenizer pads on the right."""
    out: dict[str, ValueRange] = {}
    names = {s.name for s in specs}
    vocab = config.get("vocab_size")
    if "input_ids" in names and isinstance(vocab, int) and vocab > 0:
        out["input_ids"] = ValueRange(0, vocab, origin="config.json vocab_size")
    types = config.get("type_vocab_size")
    if "token_type_ids" in names and isinstance(types, int) and types > 0:
        out["token_type_ids"] = ValueRange(0, types, origin="config.json type_vocab_size")
    if "attention_mask" in names:
        out["attention_mask"] = (ValueRange(0, 2, "right-padding", "the tokenizer pads on the right")
                                 if padding_side == "right" else ValueRange(1, 2, origin="all tokens attended"))
    return out
