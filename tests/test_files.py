"""The one output writer: paths checked before the work, OS errors as one line naming the
path (exit 2), atomic replacement that never replaces a device, FIFO or symlink."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from onnxtax.core import OnnxtaxError
from onnxtax.core.files import check_output, write_output


def test_check_output_refuses_before_any_work(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(OnnxtaxError, match=r"cannot write --json .*file/x.json: .*file is not a directory"):
        check_output(tmp_path / "file" / "x.json", "--json")
    with pytest.raises(OnnxtaxError, match="it is a directory"):
        check_output(tmp_path, "--junit")
    with pytest.raises(OnnxtaxError, match="--reports .*: it is a file"):
        check_output(tmp_path / "file", "--reports", folder=True)
    assert check_output(tmp_path / "new" / "deeper" / "x.json", "--json")  # missing folders are created later
    assert not (tmp_path / "new").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["file"]  # the probe leaves nothing behind


def test_an_os_error_while_writing_is_one_line_naming_the_path(tmp_path):
    with pytest.raises(OnnxtaxError) as info:
        write_output("/dev/full", "report", "$GITHUB_STEP_SUMMARY", append=True)
    assert info.value.message == "cannot write $GITHUB_STEP_SUMMARY /dev/full: No space left on device"
    (tmp_path / "file").write_text("")
    with pytest.raises(OnnxtaxError, match="cannot write --output .*file/matrix.json: .*file is not a directory"):
        write_output(tmp_path / "file" / "matrix.json", {"a": 1}, "--output")


def test_a_symlink_keeps_pointing_at_the_file_it_names(tmp_path):
    (tmp_path / "real.json").write_text("{}")
    (tmp_path / "link.json").symlink_to("real.json")
    write_output(tmp_path / "link.json", {"new": True}, "--json")
    assert (tmp_path / "link.json").is_symlink()
    assert (tmp_path / "real.json").read_text().strip().startswith('{\n  "new": true')


def test_a_fifo_is_written_in_place_not_replaced(tmp_path):
    """`--json /dev/stdout` and pipes: renaming a temporary file over them would replace the node."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    write_output(fifo, "hello", "--json")
    reader.join(timeout=10)
    assert got == [b"hello"]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
