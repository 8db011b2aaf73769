"""`onnxtax report merge`: is every host's artifact of a model signed by the same key, over the same bytes?

Each model report carries "signature" (ci.report: status, key_fingerprint, digests of the
artifact's files). Per model, a row:
{"model": "fraud", "verdict": "consistent" | "unsigned" | "inconsistent",
 "hosts": {"cpu-runner": {"status": "signed", "key_fingerprint": "sha256:...", "digests": {"fraud.onnx": "..."}}},
 "problems": ["gpu-runner built different bytes: fraud.onnx 1a2b3c4d5e6f, the others 0f9e8d7c6b5a"]}

Once any host signed a model, every host must have signed it with one key over the same bytes:
a host that did not sign, signed with another key, or built different bytes is a problem that
fails the merge. A model no host signed is "unsigned" (different bytes stay a note, as before).
"""

from __future__ import annotations

from collections import Counter

SIGNED = ("signed", "verified")


def _short(fp: str | None) -> str:
    return (fp or "none")[:19]


def signature_rows(hosts: list) -> list[dict]:
    """One row per model, in the hosts' order (hosts: merge.HostRun)."""
    names = list(dict.fromkeys(name for h in hosts for name in h.models))
    rows = []
    for name in names:
        cells = {}
        for h in hosts:
            rep = h.models.get(name)
            if rep is None:
                continue
            sig = rep.get("signature") if isinstance(rep.get("signature"), dict) else {}
            digests = sig.get("digests") or ({} if not rep.get("artifact_sha256") else
                                             {rep.get("onnx", "artifact").rsplit("/", 1)[-1]: rep["artifact_sha256"]})
            cells[h.label] = {"status": sig.get("status") or "unsigned", "key_fingerprint": sig.get("key_fingerprint"),
                              "digests": digests}
        problems = []
        signed = {label: c for label, c in cells.items() if c["status"] in SIGNED}
        if not signed:
            verdict = "unsigned"
        else:
            for label, c in cells.items():
                if c["status"] not in SIGNED:
                    problems.append(f"{label} did not sign it ({c['status']}); "
                                    f"{', '.join(sorted(signed))} did")
            keys = Counter(c["key_fingerprint"] for c in signed.values())
            if len(keys) > 1:
                problems.append("signed with different keys: " + ", ".join(
                    f"{label} {_short(c['key_fingerprint'])}…" for label, c in signed.items()))
            builds = Counter(tuple(sorted(c["digests"].items())) for c in cells.values() if c["digests"])
            if len(builds) > 1:
                usual = builds.most_common(1)[0][0]
                for label, c in cells.items():
                    mine = tuple(sorted(c["digests"].items()))
                    if c["digests"] and mine != usual:
                        diff = next((f"{f} {sha[:12]}, the others {dict(usual).get(f, 'none')[:12]}"
                                     for f, sha in mine if dict(usual).get(f) != sha), "other files")
                        problems.append(f"{label} built different bytes: {diff}")
            verdict = "inconsistent" if problems else "consistent"
        rows.append({"model": name, "verdict": verdict, "hosts": cells, "problems": problems})
    return rows


def signature_markdown(rows: list[dict], hosts: list[str]) -> list[str]:
    """The signatures table for matrix.md (empty when no host signed anything)."""
    if not any(r["verdict"] != "unsigned" for r in rows):
        return []
    icon = {"consistent": "✅ one key, same bytes", "inconsistent": "❌ inconsistent", "unsigned": "➖ unsigned"}
    lines = ["", "### Signatures", "", "| model | " + " | ".join(hosts) + " | verdict |",
             "|---|" + "---|" * len(hosts) + "---|"]
    for r in rows:
        cells = []
        for h in hosts:
            c = r["hosts"].get(h)
            first = next(iter(c["digests"].values()), "") if c else ""
            cells.append("" if c is None else f"{c['status']} `{_short(c['key_fingerprint'])}` `{first[:12]}`")
        lines.append(f"| {r['model']} | " + " | ".join(cells) + f" | **{icon[r['verdict']]}** |")
    lines += [f"- {r['model']}: {p}" for r in rows for p in r["problems"]]
    return lines
