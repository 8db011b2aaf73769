"""Tiny Hugging Face model folders, saved with save_pretrained (weights included), for the hf:/st:
spec tests: one per task onnxtax derives, a sentence-transformers folder, and the broken ones
(no weights, code of its own). Built from code: nothing is downloaded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

WORDS = ("the a cat dog sat on mat runs fast slow red blue is was and of to in it big small house tree "
         "river walks under over green").split()
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *"abcdefghijklmnopqrstuvwxyz",
         *(f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz")]
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 37}


def save_tokenizer(folder: Path, max_length: int = 32) -> None:
    from transformers import BertTokenizer

    BertTokenizer(vocab={w: i for i, w in enumerate(VOCAB)}, model_max_length=max_length).save_pretrained(str(folder))


def _bert_config(architecture: str, **extra):
    from transformers import BertConfig

    return BertConfig(vocab_size=99, max_position_embeddings=64, architectures=[architecture], **TINY, **extra)


def build_all(root: Path) -> dict[str, Path]:
    """Every folder the tests use, under `root`; {name: folder}."""
    import torch
    from transformers import (BertForSequenceClassification, BertForTokenClassification, BertModel, GPT2Config,
                              GPT2LMHeadModel, ViTConfig, ViTForImageClassification)

    folders: dict[str, Path] = {}

    def save(name: str, model, tokenizer: bool = True) -> None:
        folder = root / name
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = model()
        model.save_pretrained(str(folder))
        if tokenizer:
            save_tokenizer(folder)
        folders[name] = folder

    save("bert", lambda: BertModel(_bert_config("BertModel")))
    save("bert-sequence", lambda: BertForSequenceClassification(_bert_config("BertForSequenceClassification",
                                                                             num_labels=3)))
    save("bert-token", lambda: BertForTokenClassification(_bert_config("BertForTokenClassification", num_labels=5)))
    save("gpt2", lambda: GPT2LMHeadModel(GPT2Config(vocab_size=99, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                                                    architectures=["GPT2LMHeadModel"])))
    save("vit", lambda: ViTForImageClassification(ViTConfig(
        image_size=16, patch_size=8, num_channels=3, num_labels=4, architectures=["ViTForImageClassification"],
        **TINY)), tokenizer=False)

    st = root / "st"  # the BERT folder as a sentence-transformers pipeline: mean pooling, normalised
    shutil.copytree(folders["bert"], st)
    (st / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (st / "1_Pooling").mkdir()
    (st / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32,
                                                              "pooling_mode_mean_tokens": True}))
    (st / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 16, "do_lower_case": False}))
    folders["st"] = st

    bare = root / "no-weights"  # a config alone: what a half-copied folder looks like
    bare.mkdir()
    shutil.copy(folders["bert"] / "config.json", bare / "config.json")
    folders["no-weights"] = bare

    untokenized = root / "no-tokenizer"
    untokenized.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(folders["bert"] / name, untokenized / name)
    folders["no-tokenizer"] = untokenized

    remote = root / "remote-code"  # config.json naming classes in the folder's own Python files
    shutil.copytree(untokenized, remote)
    config = json.loads((remote / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_mybert.MyBertConfig", "AutoModel": "modeling_mybert.MyBert"}
    (remote / "config.json").write_text(json.dumps(config))
    (remote / "modeling_mybert.py").write_text("raise SystemExit('this code must not run without consent')\n")
    folders["remote-code"] = remote
    return folders


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


SHORT = ["the cat", "a red dog", "big tree", "the river", "green house", "a dog runs"]
LONG = ["the big red dog runs fast under the green tree and the cat sat on the mat",
        "a small cat walks over the river to the house in the tree",
        "the slow dog was in the house and it sat on a blue mat of the cat"]
