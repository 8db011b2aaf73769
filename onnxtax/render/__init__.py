"""Every stage's report rendered, in one layer that the CLI and `onnxtax ci` share: Rich tables
for a terminal or a CI log, markdown for a step summary, JUnit XML, SARIF, plots.

A stage computes a report (plain data, `to_dict()` for JSON); it never formats one. The CLI
prints what this layer renders; ci writes the files it renders.

  junit    JUnit XML from suites of cases
  sarif    SARIF 2.1.0 (lint findings, parity's first divergences)
  text     shared formatting (numbers, times, sizes)
  parity   parity's table, verdict line, markdown, JUnit suites, SARIF
  bench    the latency plot
"""
