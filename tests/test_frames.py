"""One rule for the user's frame (load errors, export errors, source findings, node stack traces)."""

from __future__ import annotations

import json
import sys

from onnxtax.core.frames import Frame, frames_in_text, frames_of, is_library, user_frame


def test_a_printed_trace_gives_the_innermost_user_frame():
    trace = ('File "/home/u/model.py", line 12, in forward\n    return self.head(x)\n'
             'File "/home/u/layers.py", line 30, in head\n    if x.sum() > 0:\n'
             'File "<eval_with_key>.5", line 9, in forward\n    cond = ...\n'
             'File "/venv/lib/python3.11/site-packages/torch/_ops.py", line 3, in __call__')
    frames = frames_in_text(trace)
    assert [f.location for f in frames][:2] == ["/home/u/model.py:12", "/home/u/layers.py:30"]
    assert user_frame(frames).location == "/home/u/layers.py:30"  # the helper, where the fix goes
    assert user_frame(frames_in_text('File "<eval_with_key>.1", line 2')) is None


def test_the_models_package_counts_even_inside_site_packages():
    pkg = "/venv/lib/python3.12/site-packages/mymodels"
    frames = [Frame(f"{pkg}/net.py", 5), Frame(f"{pkg}/blocks.py", 9),
              Frame("/venv/lib/python3.12/site-packages/torch/nn/modules/module.py", 1700)]
    assert user_frame(frames) is None
    assert user_frame(frames, f"{pkg}/net.py").location == f"{pkg}/blocks.py:9"
    # a virtualenv inside the model's folder is still library code
    assert user_frame([Frame("/proj/net.py", 3), Frame("/proj/.venv/lib/site-packages/x.py", 1)],
                      "/proj/net.py").location == "/proj/net.py:3"


def test_standard_library_frames_are_not_the_users(tmp_path):
    model = tmp_path / "broken.py"
    model.write_text("import json\n\ndef load():\n    return json.loads('{nope')\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import broken

        try:
            broken.load()
        except json.JSONDecodeError as exc:
            frames = frames_of(exc)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("broken", None)
    assert is_library(frames[-1].file)  # the error is raised inside json
    chosen = user_frame(frames)
    assert chosen.location == f"{model}:4" and chosen.code == "return json.loads('{nope')"
