"""The wire between the load generator and a serving host (the Python host, onnxtax.serve.pyhost,
and the Node.js host, node_host.js, speak it alike): a Unix stream socket the generator listens
on and each host process connects to once it is ready to serve.

  request   u64 id | payload        one row: every input's bytes for batch size 1, in input order
                                    (fixed size per run, so a host cuts frames without parsing)
  response  u32 body | u32 n | n x u64 id | outputs
                                    one frame per batch the host ran: the ids it served, then
                                    every output of the batch, whole, in output order
  hello     u32 body | HELLO | JSON   first frame after connecting: pid, runtime versions, load time
  error     u32 body | ERROR | text   a batch failed; the host exits after sending it

Little-endian throughout. Standard library only: imported by the hosts before anything else.
"""

from __future__ import annotations

import struct

REQUEST_ID = struct.Struct("<Q")
HEADER = struct.Struct("<II")
HELLO = 0xFFFFFFFE
ERROR = 0xFFFFFFFF
# one read: below malloc's mmap threshold (a 1 MB read buffer cost ~100 us of page faults per call)
RECV_BYTES = 65536

# onnxruntime tensor element types by numpy dtype name (what the Node host builds its tensors as)
ORT_TYPES = {"float32": "float32", "float64": "float64", "float16": "float16", "int64": "int64", "int32": "int32",
             "int16": "int16", "int8": "int8", "uint8": "uint8", "uint16": "uint16", "uint32": "uint32",
             "uint64": "uint64", "bool": "bool"}


def frame(kind: int, body: bytes) -> bytes:
    """A hello or error frame."""
    return HEADER.pack(len(body), kind) + body
