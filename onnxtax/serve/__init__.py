"""`onnxtax serve-bench`: the Python tax under load. Each path (eager PyTorch in Python, ONNX Runtime
in Python, ONNX Runtime in Node.js) served by its own host processes with a micro-batcher, driven by
an open-loop generator at rising offered load; the load each sustains within a latency SLO, with its
memory, cores, cold start and cost, and each host's outputs checked against the eager model.

  run        run_serve_bench: the ramps, the generator's floor, cold starts, gates
  options    ServeOptions and the parsers of its flags
  report     ServeReport and its JSON
  loadgen    the open-loop generator (latency from the scheduled arrival)
  hosts      host processes: cores, start, /proc measurements
  pyhost     the Python host (run as a module); node_host.js the Node.js host
  node_env   onnxruntime-node from npm in a cache, one folder per release
  check      each host's outputs against the eager model under parity's rule
  wire       the frames between the generator and the hosts
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from onnxtax.core.faces import lazy_face

_NAMES = {"run_serve_bench": "run", "ServeOptions": "options", "ServeReport": "report", "parse_slo": "options",
          "parse_number_list": "options", "parse_path_values": "options", "ensure_node_env": "node_env",
          "PATHS": "options"}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_face(__name__, _NAMES)

if TYPE_CHECKING:
    from onnxtax.serve.node_env import ensure_node_env
    from onnxtax.serve.options import PATHS, ServeOptions, parse_number_list, parse_path_values, parse_slo
    from onnxtax.serve.report import ServeReport
    from onnxtax.serve.run import run_serve_bench
