"""The README as a newcomer reads it: short, the headline and the two commands first, every headline figure
equal to the committed result file it cites, every cited result file present."""

from __future__ import annotations

import json
import re
from pathlib import Path

from mkdeploy.demo.pareto import pareto_table
from mkdeploy.demo.report import SETS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
HEADLINE = ROOT / "benchmarks" / "results" / "demo_headline_windowed.json"


def test_the_readme_is_short_and_opens_with_the_headline_and_the_two_commands():
    lines = README.splitlines()
    assert len(lines) <= 300
    first = "\n".join(lines[:40])
    assert "make demo" in first and "make test" in first
    assert "| **student distilled (onnx int8)** |" in first


def test_the_headline_table_equals_the_committed_headline():
    head = json.loads(HEADLINE.read_text())
    for row in pareto_table(head["pareto"]):
        assert row in README, row


def test_the_headline_intervals_equal_the_committed_headline():
    """ "distilled − tiny.en whole in fp32 is −0.56 [−1.79, +0.65] in-domain, ...": each set's difference and
    interval, as the README prints them, from headline.json."""
    head = json.loads(HEADLINE.read_text())
    text = " ".join(README.replace("−", "-").split())  # lines wrap anywhere
    for name in SETS.values():
        f = head[name]
        lo, hi = f["ci95_distilled_minus_source_fp32"]
        figure = f"{100 * (f['distilled_fp32'] - f['source_fp32']):+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]"
        assert figure.lstrip("+") in text or figure in text, figure


def test_every_result_file_the_readme_cites_exists():
    cited = set(re.findall(r"benchmarks/results/[\w./-]*\w", README))
    cited |= {f"benchmarks/results/{m}" for m in re.findall(r"`((?:int8|demo|serve|student)_[\w./-]*\w)`", README)}
    assert cited
    for path in cited:
        assert (ROOT / path).exists(), path


def test_the_results_index_lists_every_result_file_and_only_those():
    """benchmarks/results/README.md names each file (or folder) there, and each name it lists exists."""
    results = ROOT / "benchmarks" / "results"
    index = (results / "README.md").read_text()
    present = {p.name for p in results.iterdir() if p.name != "README.md"}
    for name in present:
        assert name in index, f"{name} is not in benchmarks/results/README.md"
    rows = [line.split("|")[1].strip() for line in index.splitlines() if line.startswith("| ") and "---" not in line]
    listed = {name.strip().rstrip("/") for cell in rows if cell != "file" for name in cell.split(",")}
    assert listed and listed <= present, sorted(listed - present)
