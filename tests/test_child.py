"""The child-process runner (bench's cold start, lint's provider placement): a value, an
exception, a hang and an abort each come back as a result, never as the caller's crash."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from onnxtax.core.child import run_in_child

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def test_value_and_timestamps_come_back():
    result = run_in_child("tests.child_targets:echo", {"a": [1, 2]}, timeout=60, env=ENV)
    assert result and result.status == "ok"
    assert result.value["got"] == {"a": [1, 2]} and result.value["pid"] != os.getpid()
    assert result.spawn_ns < result.started_ns < result.spawn_ns + int(result.seconds * 1e9)


def test_an_exception_in_the_child_is_a_result_with_its_hint():
    result = run_in_child("tests.child_targets:refuse", {"what": "x"}, timeout=60, env=ENV)
    assert not result and result.status == "error"
    assert (result.error_type, result.message, result.hint) == ("CheckFailed", "refused x", "ask for something else")


def test_a_child_past_its_timeout_is_killed_and_reported():
    started = time.monotonic()
    result = run_in_child("tests.child_targets:sleep_past", {"seconds": 60}, timeout=2, env=ENV)
    assert time.monotonic() - started < 30
    assert result.status == "timeout" and not result
    assert "no result after 2 s" in result.message


def test_an_aborting_child_gives_its_signal_and_last_words():
    result = run_in_child("tests.child_targets:abort_like_cpp", {}, timeout=60, env=ENV)
    assert result.status == "crashed" and result.signal == "SIGABRT" and result.exit_code < 0
    assert result.stderr_tail == "Exception from src/core/graph.cpp:12: the graph has a cycle"
    assert result.message.startswith("signal SIGABRT: Exception from")


def test_an_exit_without_a_result_is_a_crash_with_the_exit_code():
    result = run_in_child("tests.child_targets:exit_without_result", {}, timeout=60, env=ENV)
    assert (result.status, result.exit_code, result.signal) == ("crashed", 3, None)
    assert result.message == "exit code 3: RuntimeError: gave up"


def test_lint_reports_a_hung_provider_as_a_finding():
    from onnxtax.lint.placement import _ended_finding
    from onnxtax.core.providers import parse_provider

    run = run_in_child("tests.child_targets:sleep_past", {"seconds": 60}, timeout=1, env=ENV)
    finding = _ended_finding(parse_provider("openvino:device_type=CPU"), run)
    assert finding.rule == "provider-fallback" and finding.severity == "error"
    assert finding.details["timed_out"] is True
    assert "openvino:device_type=CPU did not finish loading the model: no result after 1 s" in finding.message


@pytest.mark.parametrize("target", ["tests.child_targets:no_such_function", "no_such_module:f"])
def test_a_target_that_does_not_import_is_an_error_result(target):
    result = run_in_child(target, {}, timeout=60, env=ENV)
    assert result.status == "error" and result.error_type in ("AttributeError", "ModuleNotFoundError")


def test_the_child_imports_the_same_onnxtax_as_the_parent(tmp_path, monkeypatch):
    import onnxtax

    monkeypatch.chdir(tmp_path)  # not the checkout: the child must not find onnxtax by chance
    bare = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = run_in_child("tests.child_targets:onnxtax_file", {}, timeout=60, env=bare)
    assert result.value == onnxtax.__file__
