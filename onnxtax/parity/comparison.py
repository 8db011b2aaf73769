"""Running statistics per (provider, shape, output), one ORT run at a time, no arrays kept; then
one CaseResult per provider x shape x output, with its reason and the provider's diagnosis."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

from onnxtax.core.compare import OutputStats, ToleranceRule
from onnxtax.core.inputs import ResolvedInputs
from onnxtax.core.providers import ort_error_summary
from onnxtax.core.reference import EagerReference
from onnxtax.parity.attribution import unchecked_prefix
from onnxtax.parity.diagnosis import (assumption_diagnosis, baked_hint, cross_provider_diagnosis, fresh_diagnosis,
                                      provider_diagnosis, run_error_hint)
from onnxtax.parity.report import CaseResult, ParityReport, placement_text
from onnxtax.parity.sessions import LiveSession, open_parity_session
from onnxtax.parity.shapes import ShapePlan


class Comparison:
    """Running statistics per (provider, shape, output); one ORT run at a time, no arrays kept."""

    def __init__(self, live: list[LiveSession], output_names: list[str], rule: ToleranceRule):
        self.live, self.output_names, self.rule = live, output_names, rule
        self.scales: dict[int, list[float]] = {}  # shape index -> RMS of each source output there
        self.stats: dict[tuple[int, int, int], OutputStats] = {}
        self.run_errors: dict[tuple[int, int], str] = {}
        self.error_sample: dict[tuple[int, int], int] = {}
        self.run_time: dict[tuple[int, int], float] = {}
        self.fresh_notes: dict[tuple[int, int], str] = {}  # failures a fresh session does not reproduce
        self.range_checks: dict[tuple[int, int], Any] = {}  # (provider, shape) -> attribution.RangeCheck

    def run(self, si: int, pi: int, k: int, plan: ShapePlan, feeds: dict, expected: list) -> None:
        """Sample k of shape pi on provider si; after a run error that shape is not retried there."""
        if (si, pi) in self.run_errors:
            return
        t0 = time.perf_counter()
        try:
            got = self.live[si].session.run(None, feeds)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own pybind types
            line, node = ort_error_summary(exc)
            self.run_errors[(si, pi)] = (f"ONNX Runtime failed to run at {plan.label}: {line}"
                                         + (f" (node {node})" if node else ""))
            self.error_sample[(si, pi)] = k
            return
        self.run_time[(si, pi)] = self.run_time.get((si, pi), 0.0) + time.perf_counter() - t0
        for oi, (a, b) in enumerate(zip(got, expected)):
            acc = self.stats.get((si, pi, oi))
            if acc is None:
                acc = self.stats[(si, pi, oi)] = self.rule.stats(self.output_names[oi], b)
            acc.update(a, b, sample=k, scale=self.scales.get(pi, [None] * (oi + 1))[oi])

    def failing_shapes(self, si: int, n_plans: int) -> list[tuple[int, int]]:
        """(shape index, sample) of each shape where provider si failed, with the sample to replay."""
        out = []
        for pi in range(n_plans):
            if (si, pi) in self.run_errors:
                out.append((pi, self.error_sample[(si, pi)]))
                continue
            bad = [self.stats[(si, pi, oi)] for oi in range(len(self.output_names))
                   if (si, pi, oi) in self.stats and not self.stats[(si, pi, oi)].passed]
            if bad:
                worst = bad[0].worst
                out.append((pi, worst.sample if worst is not None else 0))
        return out

    def recheck_in_fresh_sessions(self, plans: list[ShapePlan], sample_of: Callable, source: EagerReference,
                                  resolved: ResolvedInputs, onnx_path: Path, *, opt_level: str,
                                  threads: int | None, shared: Any = None, limit: int = 2) -> None:
        """Replay a failing shape in a new session. Shapes run one after another in one session, as in
        a server; when a provider fails at a shape only after other shapes ran (a provider keeping
        state from an earlier shape), the fresh session passes and the reason says so."""
        for si, live in enumerate(self.live):
            for pi, k in [(pi, k) for pi, k in self.failing_shapes(si, len(plans)) if pi > 0][:limit]:
                plan = plans[pi]
                arrays = sample_of(plan, k)
                expected = source(arrays, f"{plan.label} sample {k}", plan.file)
                try:
                    session = open_parity_session(onnx_path, live.result.request, shared, opt_level=opt_level,
                                            threads=threads, record_placement=False)
                    got = session.run(None, resolved.feeds(arrays))
                except Exception:  # noqa: BLE001 - the original failure stands on its own
                    continue
                finally:
                    session = None  # closed before the next shape's loads: one more copy of the weights at most
                checks = [self.rule.stats(name, b) for name, b in zip(self.output_names, expected)]
                scales = self.scales.get(pi, [None] * len(checks))
                if len(got) == len(expected) and all(c.update(a, b, scale=sc)
                                                     for c, a, b, sc in zip(checks, got, expected, scales)):
                    self.fresh_notes[(si, pi)] = (
                        f"a new {live.result.request.name} session computes sample {k} of {plan.label} correctly: "
                        f"it fails only after {', '.join(p.label for p in plans[:pi])} ran in the same session, so "
                        "the provider keeps state from an earlier shape (a provider bug a long-lived session "
                        "serving several shapes hits too)")

    def collect(self, report: ParityReport, plans: list[ShapePlan], constant: dict[str, str] | None = None,
                allowed: Sequence[str] = ()) -> None:
        """Turn the statistics into one CaseResult per provider x shape x output, with reasons.
        `constant`: outputs the source gives the same for every input (name -> why); they fail
        every case as "not compared" unless `allowed`."""
        constant = constant or {}
        static_notes = [n for n in report.notes if "is static" in n]
        for si, s in enumerate(self.live):
            pr = s.result
            for pi, plan in enumerate(plans):
                error = self.run_errors.get((si, pi))
                fresh = self.fresh_notes.get((si, pi))
                share = self.run_time.get((si, pi), 0.0) / max(1, len(self.output_names))
                for oi, name in enumerate(self.output_names):
                    acc = self.stats.get((si, pi, oi))
                    if acc is None:  # no sample ran: the first run failed
                        reason = (error or "not run") + (
                            f"; {fresh}" if fresh else f"; {static_notes[0]}" if static_notes
                            else run_error_hint(plan))
                        case = CaseResult(plan.label, name, "error", reason, None, share)
                    else:
                        reason = acc.failure_reason()
                        if reason and fresh:
                            reason += f"; {fresh}"
                        elif reason and any(p.startswith("shape ") for p in acc.problems):
                            reason += baked_hint(acc, plan, report.export_sizes)
                        if error is not None:  # later samples stopped by a run error
                            reason = "; ".join(filter(None, [reason, error]))
                        case = CaseResult(plan.label, name, "passed" if reason is None else "failed", reason,
                                          acc, share)
                    if case.reason and plan.assumption:  # blamed on the range only when inside it the sample passes
                        check = self.range_checks.get((si, pi))
                        case.reason = (check.prefix(plan) if check else unchecked_prefix(plan)) + case.reason
                    if acc is not None and 0 < acc.failed_samples < acc.samples and not acc.problems:
                        case.hint = "--localize finds the module, the line and the rows"
                    if name in constant and name not in allowed:
                        case.only_constant = case.passed
                        case.status = "failed" if case.status == "passed" else case.status
                        case.reason = "; ".join(filter(None, [f"not compared: constant output ({constant[name]})",
                                                              case.reason]))
                    pr.cases.append(case)
        for name, why in constant.items():
            if name in allowed:
                report.notes.append(f"output '{name}' is constant ({why}): compared, but no wrong value that is the "
                                    "same constant could show; allowed by --allow-constant")
                continue
            line = (f"output '{name}': not compared: constant output ({why}), so the check cannot fail; make the "
                    f"inputs exercise it (--range, --data), or allow it with --allow-constant {name} if it really "
                    "does not depend on the inputs")
            report.model_failures.append(line)
        for si, s in enumerate(self.live):
            pr = s.result
            if any(not c.passed for c in pr.cases) and pr.status == "passed":
                pr.status = "failed"
                others = [o.result for o in self.live if o is not s]
                pr.reason = (fresh_diagnosis(pr, [n for (i, _), n in self.fresh_notes.items() if i == si])
                             or assumption_diagnosis(pr, plans, {plans[p].label for (i, p), c in
                                                                 self.range_checks.items() if i == si and
                                                                 c.verdict == "range"})
                             or cross_provider_diagnosis(pr, others) or provider_diagnosis(pr, plans))
            elif pr.status == "passed" and pr.placement and pr.placement.fell_back:
                pr.reason = placement_text(pr.placement)


def measure_case_noise(rule: ToleranceRule, source: EagerReference, plans: list[ShapePlan], cases: list[dict],
                       expected: list[list], specs: list, recipe: Any, output_names: list[str]) -> None:
    """The model's own noise into `rule` (the runtime matrix's and serve-bench's checks, whose cases
    are computed up front: {"plan", "sample"} each), at the largest random shape, per output the
    largest over its first samples (one per input scale, as parity does)."""
    import math

    from onnxtax.core.noise import NOISE_SAMPLES, largest_noise
    from onnxtax.parity.shapes import sample_inputs

    if not rule.uses_noise or not cases:
        return
    at = max(range(len(cases)), key=lambda i: (cases[i]["sample"] == 0 and plans[cases[i]["plan"]].origin == "random",
                                               math.prod(plans[cases[i]["plan"]].sizes.values())))
    chosen = [i for i in range(len(cases)) if cases[i]["plan"] == cases[at]["plan"]
              and cases[i]["sample"] < NOISE_SAMPLES] if plans[cases[at]["plan"]].origin == "random" else [at]
    measured = []
    for i in chosen:
        noise, rule.noise_note = source.noise(sample_inputs(plans[cases[i]["plan"]], specs, recipe, cases[i]["sample"]),
                                              expected[i])
        measured.append(noise)
        if rule.noise_note:
            break
    rule.noise = dict(zip(output_names, largest_noise(measured)))
    rule.dtypes = dict(zip(output_names, source.dtypes))
