"""JUnit XML from suites of test cases: what CI systems show as tests (one per provider x shape x
output for parity, one per release x provider for the runtime matrix, one per stage for ci)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from onnxtax.core.files import write_output


@dataclass
class JUnitCase:
    name: str
    classname: str
    time_s: float = 0.0
    failure: str | None = None  # one-line message; None = passed
    details: str = ""
    skipped: str | None = None  # reason; None = ran
    error: str | None = None  # could not run (e.g. ORT load error)


@dataclass
class JUnitSuite:
    name: str
    cases: list[JUnitCase] = field(default_factory=list)
    properties: dict[str, str] = field(default_factory=dict)


def junit_xml(suites: list[JUnitSuite], name: str = "onnxtax") -> str:
    root = ET.Element("testsuites", name=name)
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    total_time = 0.0
    for suite in suites:
        failures = sum(1 for c in suite.cases if c.failure is not None)
        errors = sum(1 for c in suite.cases if c.error is not None)
        skipped = sum(1 for c in suite.cases if c.skipped is not None)
        time_s = sum(c.time_s for c in suite.cases)
        el = ET.SubElement(root, "testsuite", name=suite.name, tests=str(len(suite.cases)),
                           failures=str(failures), errors=str(errors), skipped=str(skipped),
                           time=f"{time_s:.3f}")
        if suite.properties:
            props = ET.SubElement(el, "properties")
            for k, v in suite.properties.items():
                ET.SubElement(props, "property", name=k, value=str(v))
        for case in suite.cases:
            c = ET.SubElement(el, "testcase", name=case.name, classname=case.classname, time=f"{case.time_s:.3f}")
            if case.failure is not None:
                f = ET.SubElement(c, "failure", message=case.failure)
                f.text = case.details or case.failure
            if case.error is not None:
                e = ET.SubElement(c, "error", message=case.error)
                e.text = case.details or case.error
            if case.skipped is not None:
                ET.SubElement(c, "skipped", message=case.skipped)
        totals["tests"] += len(suite.cases)
        totals["failures"] += failures
        totals["errors"] += errors
        totals["skipped"] += skipped
        total_time += time_s
    for k, v in totals.items():
        root.set(k, str(v))
    root.set("time", f"{total_time:.3f}")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(path: str | Path, suites: list[JUnitSuite], name: str = "onnxtax", what: str = "--junit") -> None:
    write_output(path, junit_xml(suites, name), what)
