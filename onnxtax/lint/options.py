"""The options of one lint-ops run: what `onnxtax lint-ops`, `lint_model(...)` and a ci `[lint]` table set."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from onnxtax.core import defaults
from onnxtax.core.errors import ConfigError
from onnxtax.core.options import StageOptions


@dataclass
class LintOptions(StageOptions):
    """The deployment runtime's limits (`target_opset`, `target_ir`, or a release `target_ort`
    whose limits onnxtax knows), the providers whose placement is checked, the allow list
    ("rule" or "rule:node", reported but not failing) and the severity that fails."""

    target_opset: int | None = None
    target_ir: int | None = None
    target_ort: str | None = None
    providers: list[Any] = field(default_factory=list)  # texts ("openvino:device_type=CPU") or ProviderRequests
    allow: list[str] = field(default_factory=list)
    fail_on: str = defaults.LINT_FAIL_ON

    def validate(self) -> None:
        from onnxtax.lint.findings import check_fail_on, parse_allow

        check_fail_on(self.fail_on)
        parse_allow(self.allow)
        for value, flag in ((self.target_opset, "--target-opset"), (self.target_ir, "--target-ir")):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{flag} {value} is not a positive integer", f"e.g. {flag} 17")
        if self.target_ort:
            from onnxtax.core.ort_compat import limits_for

            limits_for(self.target_ort)  # an unknown release: exit 2 before any work
