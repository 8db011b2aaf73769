"""`onnxtax quantize`: INT8 approved only when every data segment stays within its budget."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from onnxtax.core import defaults
from onnxtax.cli._app import (DEBUG_HELP, EXIT_CODES_HELP, app, check_files, console, err_console, json_option,
                              print_json, print_memory, progress_display, user_errors)
from onnxtax.cli.export import INPUT_HELP, RANDOM_INIT_HELP, SPEC_ARG, TRUST_HELP, hub_spec
from onnxtax.render.quantize import quantize_table, quantize_verdict

_NO = []  # typer's list defaults


@app.command(epilog=EXIT_CODES_HELP)
def quantize(
    spec: Annotated[str, SPEC_ARG],
    onnx_model: Annotated[Path, typer.Argument(help="The FP32 .onnx file (from `onnxtax export`).",
                                               show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the INT8 .onnx; its manifest goes "
                                         "beside it. Written only when every budget holds.", show_default=False)],
    eval_: Annotated[list[str], typer.Option("--eval", help="NAME=FILE.npz: one data segment (arrays keyed by input "
                                             "name, rows on axis 0). Repeatable; FILE.npz alone is named by its "
                                             "stem or split by --segment-key. For hf:/st: models NAME=FILE.txt: "
                                             "one sentence a line, tokenized by the model's tokenizer.",
                                             show_default=False)] = _NO,
    budget: Annotated[list[str], typer.Option(help="[SEGMENT:]METRIC=VALUE, e.g. agreement@0.5=0.97, "
                                              "tail:agreement@0.5=0.95, top1=0.99, top5=1, cosine=0.995, "
                                              "max_abs=0.05, mean_abs=0.01, accuracy_drop=1.0 (points). Without "
                                              "SEGMENT: every segment. Repeatable.", show_default=False)] = _NO,
    mode: Annotated[str, typer.Option(help="dynamic (activation scales per batch), static (calibrated ranges), or "
                                      "auto (both; the fastest that passes).")] = defaults.QUANTIZE_MODE,
    calibration: Annotated[list[Path], typer.Option(help="A .npz of representative inputs for static "
                                                    "quantization (keep it apart from the --eval data). "
                                                    "Repeatable.", show_default=False)] = _NO,
    calibration_method: Annotated[str, typer.Option(help="minmax, entropy, percentile or distribution.")
                                  ] = defaults.QUANTIZE_CALIBRATION_METHOD,
    quant_format: Annotated[str, typer.Option("--format", help="Static builds: qdq (Quantize/DequantizeLinear "
                                              "pairs, ORT's recommended) or qoperator (QLinear* ops).")
                            ] = defaults.QUANTIZE_FORMAT,
    per_channel: Annotated[bool, typer.Option(help="Quantize weights per output channel.")] = False,
    labels: Annotated[str | None, typer.Option(help="Name of a label array in the --eval files: adds accuracy and "
                                               "accuracy_drop per segment.", show_default=False)] = None,
    segment_key: Annotated[str | None, typer.Option(help="Name of an array in the --eval files whose values split "
                                                    "the rows into segments (e.g. region).",
                                                    show_default=False)] = None,
    metric_output: Annotated[str | None, typer.Option(help="The ONNX output the metrics are computed on "
                                                      "(default: the first).", show_default=False)] = None,
    exclude: Annotated[list[str], typer.Option(help="Keep nodes in FP32: a glob over node names or PyTorch module "
                                               "paths (net.0, encoder.layer.*.attention). Repeatable.",
                                               show_default=False)] = _NO,
    auto_exclude: Annotated[bool, typer.Option(help="When a budget fails, keep the node adding the most error in "
                                               "FP32 and re-quantize, until the budgets hold or --max-exclude.")
                            ] = False,
    max_exclude: Annotated[int, typer.Option(help="Most nodes --auto-exclude keeps in FP32.")
                           ] = defaults.QUANTIZE_MAX_EXCLUDE,
    input: Annotated[list[str], typer.Option("--input", "-i", help=INPUT_HELP + " Default: the manifest beside the "
                                             "model, else the graph's inputs.", show_default=False)] = _NO,
    provider: Annotated[list[str], typer.Option("--provider", "-p", help="Where metrics and latency are measured "
                                                "(cpu, openvino:device_type=CPU, ...). Repeatable. Default: every "
                                                "compute provider on this host.", show_default=False)] = _NO,
    batch_size: Annotated[int, typer.Option(help="Rows per batch of the batched evaluation (segments mixed, as "
                                            "a server batches requests).")] = defaults.QUANTIZE_BATCH_SIZE,
    bench_batch_sizes: Annotated[str, typer.Option(help="Batch sizes of the FP32 vs INT8 latency "
                                                   "measurement.")
                                 ] = ",".join(map(str, defaults.BENCH_BATCH_SIZES)),
    bench_min_time: Annotated[float, typer.Option(help="Seconds of timed calls per build and batch size.")
                              ] = defaults.QUANTIZE_BENCH_MIN_TIME,
    min_speedup: Annotated[float | None, typer.Option(help="Also require FP32 p50 / INT8 p50 >= X at every "
                                                      "--bench-batch-sizes and provider (a speed gate; timings on "
                                                      "shared runners are noisy).", show_default=False)] = None,
    preprocess: Annotated[bool, typer.Option(help="Run ORT's quant_pre_process (shape inference, graph "
                                             "optimisation) first.")] = True,
    seed: Annotated[int, typer.Option(help="Seed of the batch mixing.")] = 0,
    random_init: Annotated[bool, typer.Option("--random-init", help=RANDOM_INIT_HELP)] = False,
    trust_remote_code: Annotated[bool, typer.Option("--trust-remote-code", help=TRUST_HELP)] = False,
    json_out: Annotated[str | None, json_option()] = None,
    debug: Annotated[bool, typer.Option("--debug", help=DEBUG_HELP)] = False,
) -> None:
    """Quantize MODEL.onnx to INT8 and write it only if every data segment stays within every budget
    against the FP32 eager model, rows run one at a time and in batches. Shows what an aggregate
    gate would have said, which nodes were kept in FP32 (with their PyTorch modules), and FP32 vs
    INT8 size and latency."""
    json_stdout = json_out == "-"
    with user_errors(debug):
        from onnxtax.bench import parse_batch_sizes
        from onnxtax.core.paths import PlannedFiles
        from onnxtax.quantize import QuantizeOptions, quantize_model
        from onnxtax.quantize.segments import parse_eval

        options = QuantizeOptions(evals=list(eval_), budgets=list(budget), mode=mode, calibration=list(calibration),
                                  calibration_method=calibration_method, quant_format=quant_format,
                                  per_channel=per_channel, labels=labels, segment_key=segment_key,
                                  output_name=metric_output, exclude=list(exclude), auto_exclude=auto_exclude,
                                  max_exclude=max_exclude, providers=provider or None, batch_size=batch_size,
                                  bench_batch_sizes=parse_batch_sizes(bench_batch_sizes, flag="--bench-batch-sizes"),
                                  bench_min_time=bench_min_time, min_speedup=min_speedup, preprocess=preprocess,
                                  seed=seed)
        options.validate()
        spec = hub_spec(spec, random_init, trust_remote_code)
        files = (PlannedFiles().read_spec(spec).read_artifact(onnx_model)
                 .write_artifact(output, "-o", probe=False).write(json_out, "--json"))
        for name, path in parse_eval(options.evals):
            files.read(path, f"the --eval data{f' of segment {name}' if name else ''}")
        for path in options.calibration:
            files.read(path, "the --calibration data")
        check_files(files)
        with progress_display("quantize") as progress:
            report = quantize_model(spec, onnx_model, output, options, inputs=input or None, progress=progress)
    if json_stdout:
        print_json(report.to_dict())
    else:
        quantize_table(report, console)
    quantize_verdict(report, err_console if json_stdout else console)
    print_memory(report, err_console if json_stdout else console)
    with user_errors(debug):
        _write_json(report, json_out)
    raise typer.Exit(report.exit_code)


def _write_json(report: Any, json_out: str | None) -> None:
    """After the table: through the one output writer (an OS error is one line, exit 2)."""
    from onnxtax.core.files import write_output
    from onnxtax.core.report import jsonable

    if json_out and json_out != "-":
        write_output(json_out, jsonable(report.to_dict()), "--json")
