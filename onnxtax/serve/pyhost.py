"""The Python serving host: one process that loads the model (eager PyTorch, or an ONNX Runtime
session), batches the requests it reads from the generator's socket under the run's policy, and
answers each batch. Run as `python -m onnxtax.serve.pyhost CONFIG.json` by onnxtax.serve.hosts;
node_host.js is the same program for Node.js, with the same policy.

Batching (both hosts): requests queue in arrival order; a free worker takes up to `max_batch` of
them as soon as that many are queued, or as soon as the oldest has waited `max_wait_ms` (0: take
whatever is queued). `threads` workers run batches concurrently: eager PyTorch threads share the
GIL; ONNX Runtime threads share one session (`run` releases the GIL). `intra_op_threads` is each
runtime's own thread count per call.

Check mode (`check` in the config): before serving, the host runs parity's cases through the
same path requests take (request frames -> batch -> model -> response bytes) and writes what it
returned, with the dtype and shape the runtime gave, for onnxtax.serve.check to compare.

Only the standard library at module level: the engine's imports (torch, or numpy and
onnxruntime) are the host's own, as in a serving process.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from collections import deque
from typing import Any, Callable

from onnxtax.serve.wire import ERROR, HEADER, HELLO, RECV_BYTES, frame

Engine = Callable[[list], list]


# --------------------------------------------------------------------------- engines
def torch_engine(cfg: dict) -> tuple[Engine, dict]:
    import torch

    torch.set_num_threads(int(cfg["intra_op_threads"]))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    from onnxtax.core.inputs import flatten_outputs, to_numpy
    from onnxtax.core.loading import check_inputs_match, load_model
    from onnxtax.core.specs import InputSpec

    model = load_model(cfg["spec"]).module
    model.eval()
    model = check_inputs_match(model, [InputSpec(i["name"], tuple(i["row_shape"])) for i in cfg["inputs"]],
                               cfg["spec"])

    def run(arrays: list) -> list:
        with torch.inference_mode():
            out = model(*[torch.from_numpy(a) for a in arrays])
        return [to_numpy(t) for _, t in flatten_outputs(out)]

    return run, {"torch": torch.__version__}


def ort_engine(cfg: dict) -> tuple[Engine, dict]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = int(cfg["intra_op_threads"])
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, cfg["opt_level"])
    session = ort.InferenceSession(cfg["onnx"], so, providers=["CPUExecutionProvider"])
    fed = [(k, i["onnx_name"]) for k, i in enumerate(cfg["inputs"]) if i.get("onnx_name")]

    def run(arrays: list) -> list:
        return session.run(None, {name: arrays[k] for k, name in fed})

    return run, {"onnxruntime": ort.__version__}


def noop_engine(cfg: dict) -> tuple[Engine, dict]:
    """The generator's own floor: batches made as for a model, nothing computed, nothing returned."""
    return (lambda arrays: []), {}


ENGINES = {"torch": torch_engine, "ort": ort_engine, "noop": noop_engine}


# --------------------------------------------------------------------------- the request path
class Codec:
    """Request frames -> one array per input (batch first); outputs -> response bytes."""

    def __init__(self, inputs: list[dict]):
        import numpy as np

        self.np = np
        self.dtypes = [np.dtype(i["dtype"]) for i in inputs]

    def assemble(self, frames: list[bytes], row_shapes: list[list[int]]) -> tuple[bytes, list]:
        np = self.np
        n = len(frames)
        raw = np.frombuffer(b"".join(frames), dtype=np.uint8).reshape(n, -1)
        ids = raw[:, :8].tobytes()
        arrays, offset = [], 8
        for dtype, shape in zip(self.dtypes, row_shapes):
            size = dtype.itemsize
            for d in shape:
                size *= d
            block = np.ascontiguousarray(raw[:, offset:offset + size])
            arrays.append(block.view(dtype).reshape(n, *shape))
            offset += size
        return ids, arrays

    def encode(self, outputs: list) -> bytes:
        np = self.np
        return b"".join(np.ascontiguousarray(o).tobytes() for o in outputs)


class Server:
    def __init__(self, sock: socket.socket, engine: Engine, codec: Codec, cfg: dict):
        self.sock, self.engine, self.codec = sock, engine, codec
        self.frame_size = 8 + int(cfg["payload_bytes"])
        self.row_shapes = [i["row_shape"] for i in cfg["inputs"]]
        self.max_batch = int(cfg["policy"]["max_batch"])
        self.wait_ns = int(float(cfg["policy"]["max_wait_ms"]) * 1e6)
        self.queue: deque = deque()
        self.cond = threading.Condition()
        self.closed = False
        self.write_lock = threading.Lock()

    def read(self) -> None:
        size, rest = self.frame_size, b""
        while True:
            data = self.sock.recv(RECV_BYTES)
            if not data:
                break
            now = time.monotonic_ns()
            if rest:
                data = rest + data
            k = len(data) // size
            rest = data[k * size:]
            if not k:
                continue
            with self.cond:
                self.queue.extend((now, data[i * size:(i + 1) * size]) for i in range(k))
                self.cond.notify()
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def take(self) -> list[bytes] | None:
        queue, cond = self.queue, self.cond
        with cond:
            while True:
                if queue:
                    if len(queue) >= self.max_batch or not self.wait_ns:
                        break
                    left = queue[0][0] + self.wait_ns - time.monotonic_ns()
                    if left <= 0:
                        break
                    cond.wait(left / 1e9)
                elif self.closed:
                    return None
                else:
                    cond.wait()
            batch = [queue.popleft()[1] for _ in range(min(len(queue), self.max_batch))]
            if queue:
                cond.notify()
        return batch

    def work(self) -> None:
        while True:
            batch = self.take()
            if batch is None:
                return
            try:
                ids, arrays = self.codec.assemble(batch, self.row_shapes)
                body = ids + self.codec.encode(self.engine(arrays))
                message = HEADER.pack(len(body), len(batch)) + body
            except Exception as exc:  # noqa: BLE001 - the runtime's error goes to the generator
                text = f"{type(exc).__name__}: {str(exc).strip()}"[:2000]
                with self.write_lock:
                    self.sock.sendall(frame(ERROR, text.encode()))
                os._exit(3)
            with self.write_lock:
                self.sock.sendall(message)


# --------------------------------------------------------------------------- check and warm-up
def run_check(engine: Engine, codec: Codec, check: dict) -> None:
    """Parity's cases, through the request path; outputs and their dtype/shape to files."""
    with open(check["file"], "rb") as f:
        blob = f.read()
    results, out = [], bytearray()
    for case in check["cases"]:
        rows, shapes = int(case["rows"]), case["row_shapes"]
        size = (len(blob) if case.get("nbytes") is None else int(case["nbytes"])) // rows
        start = int(case["offset"])
        frames = [blob[start + r * size:start + (r + 1) * size] for r in range(rows)]
        entry: dict[str, Any] = {"error": None, "outputs": []}
        try:
            _, arrays = codec.assemble(frames, shapes)
            outputs = engine(arrays)
            for o in outputs:
                data = codec.encode([o])
                entry["outputs"].append({"dtype": str(o.dtype), "dims": list(o.shape), "offset": len(out),
                                         "nbytes": len(data)})
                out += data
        except Exception as exc:  # noqa: BLE001 - reported per case, as the runtime said it
            entry["error"] = f"{type(exc).__name__}: {str(exc).strip()}"[:2000]
        results.append(entry)
    with open(check["out"], "wb") as f:
        f.write(bytes(out))
    with open(check["result"], "w", encoding="utf-8") as f:
        json.dump({"cases": results}, f)


def warm_up(engine: Engine, codec: Codec, cfg: dict) -> None:
    """One call at batch 1 and one at the largest batch: the runtime's first-call work is done."""
    frame_bytes = b"\0" * (8 + int(cfg["payload_bytes"]))
    shapes = [i["row_shape"] for i in cfg["inputs"]]
    for n in sorted({1, int(cfg["policy"]["max_batch"])}):
        engine(codec.assemble([frame_bytes] * n, shapes)[1])


def main() -> None:
    started = time.monotonic()
    with open(sys.argv[1], encoding="utf-8") as f:
        cfg = json.load(f)
    engine, versions = ENGINES[cfg["engine"]](cfg)
    codec = Codec(cfg["inputs"])
    load_s = time.monotonic() - started
    if cfg.get("check"):
        run_check(engine, codec, cfg["check"])
    if cfg.get("warmup"):
        warm_up(engine, codec, cfg)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(cfg["socket"])
    versions["python"] = sys.version.split()[0]
    hello = {"pid": os.getpid(), "host": "python", "versions": versions, "load_s": load_s}
    sock.sendall(frame(HELLO, json.dumps(hello).encode()))
    server = Server(sock, engine, codec, cfg)
    for _ in range(int(cfg["threads"])):
        threading.Thread(target=server.work, daemon=True).start()
    server.read()
    sys.stdout.flush()
    os._exit(0)  # torch and onnxruntime tear down slowly; the generator has closed the socket


if __name__ == "__main__":
    main()
