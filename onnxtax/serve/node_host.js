'use strict';
// The Node.js serving host of `onnxtax serve-bench`: ONNX Runtime through onnxruntime-node, no
// Python in the process. The same program as onnxtax/serve/pyhost.py, in JavaScript: it loads
// the model, runs parity's cases through the request path when asked (check mode), connects to
// the generator's Unix socket, and serves batches under the same policy.
//
//   node node_host.js CONFIG.json        (NODE_PATH: the cached node_modules with onnxruntime-node)
//
// Batching: requests queue in arrival order; while fewer than `threads` batches are in flight, a
// batch of up to `max_batch` requests leaves as soon as that many are queued, or as soon as the
// oldest has waited `max_wait_ms` (0: whatever is queued). Each batch is one awaited
// `session.run` (onnxruntime-node runs it off the event loop).
//
// Wire (onnxtax/serve/wire.py): request = u64 id + payload; response = u32 body, u32 n,
// n x u64 id, outputs; hello and error frames carry JSON or text.

const fs = require('fs');
const net = require('net');
const { performance } = require('perf_hooks');
const ort = require('onnxruntime-node');

const HELLO = 0xFFFFFFFE;
const ERROR = 0xFFFFFFFF;

// numpy dtype name -> [typed array, onnxruntime tensor type]
const TYPES = {
  float32: [Float32Array, 'float32'], float64: [Float64Array, 'float64'], float16: [Uint16Array, 'float16'],
  int64: [BigInt64Array, 'int64'], int32: [Int32Array, 'int32'], int16: [Int16Array, 'int16'],
  int8: [Int8Array, 'int8'], uint8: [Uint8Array, 'uint8'], uint16: [Uint16Array, 'uint16'],
  uint32: [Uint32Array, 'uint32'], uint64: [BigUint64Array, 'uint64'], bool: [Uint8Array, 'bool'],
};
const ITEMSIZE = { float32: 4, float64: 8, float16: 2, int64: 8, int32: 4, int16: 2, int8: 1, uint8: 1,
  uint16: 2, uint32: 4, uint64: 8, bool: 1 };

function frame(kind, body) {
  const head = Buffer.alloc(8);
  head.writeUInt32LE(body.length, 0);
  head.writeUInt32LE(kind, 4);
  return Buffer.concat([head, body]);
}

function product(dims) {
  return dims.reduce((a, b) => a * b, 1);
}

// Request frames -> one tensor per input (batch first): each input's bytes copied row by row
// into an unpooled buffer (aligned for its typed array), viewed as that input's element type.
function assemble(cfg, frames, rowShapes) {
  const n = frames.length;
  const ids = Buffer.allocUnsafe(8 * n);
  for (let r = 0; r < n; r++) frames[r].copy(ids, 8 * r, 0, 8);
  const feeds = {};
  let offset = 8;
  cfg.inputs.forEach((spec, k) => {
    const rowBytes = ITEMSIZE[spec.dtype] * product(rowShapes[k]);
    const data = Buffer.allocUnsafeSlow(rowBytes * n);
    for (let r = 0; r < n; r++) frames[r].copy(data, r * rowBytes, offset, offset + rowBytes);
    offset += rowBytes;
    if (!spec.onnx_name) return; // an input the graph dropped
    const [Ctor, type] = TYPES[spec.dtype];
    const view = new Ctor(data.buffer, data.byteOffset, data.length / ITEMSIZE[spec.dtype]);
    feeds[spec.onnx_name] = new ort.Tensor(type, view, [n, ...rowShapes[k]]);
  });
  return { ids, feeds };
}

// Every output's bytes, whole, in the session's output order.
function encode(session, results) {
  return session.outputNames.map((name) => {
    const d = results[name].data;
    return Buffer.from(d.buffer, d.byteOffset, d.byteLength);
  });
}

async function runCheck(cfg, session) {
  const check = cfg.check;
  const blob = fs.readFileSync(check.file);
  const results = [];
  const out = [];
  let written = 0;
  for (const c of check.cases) {
    const size = c.nbytes / c.rows;
    const frames = [];
    for (let r = 0; r < c.rows; r++) frames.push(blob.subarray(c.offset + r * size, c.offset + (r + 1) * size));
    const entry = { error: null, outputs: [] };
    try {
      const { feeds } = assemble(cfg, frames, c.row_shapes);
      const res = await session.run(feeds);
      const bytes = encode(session, res);
      session.outputNames.forEach((name, i) => {
        const t = res[name];
        entry.outputs.push({ dtype: t.type, dims: t.dims.map(Number), offset: written, nbytes: bytes[i].length });
        out.push(bytes[i]);
        written += bytes[i].length;
      });
    } catch (err) {
      entry.error = String(err && err.message ? err.message : err).slice(0, 2000);
    }
    results.push(entry);
  }
  fs.writeFileSync(check.out, Buffer.concat(out));
  fs.writeFileSync(check.result, JSON.stringify({ cases: results }));
}

async function warmUp(cfg, session) {
  const frameBytes = Buffer.alloc(8 + cfg.payload_bytes);
  const shapes = cfg.inputs.map((i) => i.row_shape);
  for (const n of [...new Set([1, cfg.policy.max_batch])].sort((a, b) => a - b)) {
    await session.run(assemble(cfg, new Array(n).fill(frameBytes), shapes).feeds);
  }
}

function serve(cfg, session, loadS) {
  const frameSize = 8 + cfg.payload_bytes;
  const rowShapes = cfg.inputs.map((i) => i.row_shape);
  const maxBatch = cfg.policy.max_batch;
  const maxWait = Number(cfg.policy.max_wait_ms);
  const threads = cfg.threads;
  const noop = cfg.engine === 'noop';
  const queue = []; // [arrival ms, frame]
  let head = 0; // queue[head] is the oldest waiting request
  let rest = null;
  let inFlight = 0;
  let armed = false;

  const sock = net.createConnection(cfg.socket);

  function fail(err) {
    const text = String(err && err.message ? err.message : err).slice(0, 2000);
    sock.write(frame(ERROR, Buffer.from(text)), () => process.exit(3));
  }

  function dispatch(frames) {
    inFlight++;
    const { ids, feeds } = assemble(cfg, frames, rowShapes);
    const done = (parts) => {
      let body = ids.length;
      for (const p of parts) body += p.length;
      const head8 = Buffer.allocUnsafe(8);
      head8.writeUInt32LE(body, 0);
      head8.writeUInt32LE(frames.length, 4);
      sock.cork();
      sock.write(head8);
      sock.write(ids);
      for (const p of parts) sock.write(p);
      sock.uncork();
      inFlight--;
      schedule();
    };
    if (noop) {
      setImmediate(() => done([]));
      return;
    }
    session.run(feeds).then((res) => done(encode(session, res)), fail);
  }

  function schedule() {
    while (inFlight < threads && head < queue.length) {
      const waiting = queue.length - head;
      const left = maxWait - (performance.now() - queue[head][0]);
      if (waiting < maxBatch && maxWait > 0 && left > 0) {
        if (!armed) {
          armed = true;
          const again = () => { armed = false; schedule(); };
          // Node.js timers count whole milliseconds: the wait ends at the next one (spinning through
          // setImmediate for the fraction would be precise, and burn the host's core while idle)
          setTimeout(again, Math.ceil(left));
        }
        return;
      }
      const take = Math.min(waiting, maxBatch);
      const frames = new Array(take);
      for (let i = 0; i < take; i++) frames[i] = queue[head + i][1];
      head += take;
      if (head > 4096 && head * 2 > queue.length) { queue.splice(0, head); head = 0; }
      dispatch(frames);
    }
  }

  sock.on('connect', () => {
    const hello = { pid: process.pid, host: 'node', load_s: loadS,
      versions: { node: process.versions.node, 'onnxruntime-node': require('onnxruntime-node/package.json').version } };
    sock.write(frame(HELLO, Buffer.from(JSON.stringify(hello))));
  });
  sock.on('data', (chunk) => {
    const now = performance.now();
    let data = rest ? Buffer.concat([rest, chunk]) : chunk;
    const k = Math.floor(data.length / frameSize);
    for (let i = 0; i < k; i++) queue.push([now, data.subarray(i * frameSize, (i + 1) * frameSize)]);
    rest = data.length > k * frameSize ? Buffer.from(data.subarray(k * frameSize)) : null;
    schedule();
  });
  sock.on('error', () => process.exit(0));
  sock.on('close', () => process.exit(0));
}

async function main() {
  const started = performance.now();
  const cfg = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  let session = null;
  if (cfg.engine !== 'noop') {
    session = await ort.InferenceSession.create(cfg.onnx, {
      executionProviders: ['cpu'], intraOpNumThreads: cfg.intra_op_threads, interOpNumThreads: 1,
      executionMode: 'sequential', graphOptimizationLevel: cfg.node_opt_level, logSeverityLevel: 3,
    });
  }
  const loadS = (performance.now() - started) / 1000;
  if (cfg.check) await runCheck(cfg, session);
  if (cfg.warmup && session) await warmUp(cfg, session);
  serve(cfg, session, loadS);
}

main().catch((err) => {
  process.stderr.write(`error: ${err && err.stack ? err.stack : err}\n`);
  process.exit(2);
});
