"""Performance figures live in one place: docs/benchmarks.md. Other docs quote it.

The rule. A *figure* is a number written with a unit of speed, time or size:
``req/s``, ``requests/s``, ``ms``, ``us``, ``µs``, ``ns``, ``MB``, ``MiB``,
``kB``, ``KiB``, ``GB``, ``GiB`` (after an optional space), or a ratio written
as a number directly followed by ``x`` (``3.80x``; ``8x8`` and ``569 x 30`` are
shapes, not ratios). A range such as ``0.351-0.353 ms`` is two figures. Every
figure in README.md and docs/*.md, outside fenced code blocks (example output,
commands), must equal, as a number, a number written somewhere in
docs/benchmarks.md (``3.8x`` matches ``3.80x``; ``10,004`` matches ``10,004``).

So a doc that copies a figure and is not updated when the benchmark is run
again, or that states a measurement no benchmark records, fails here: update
the doc to quote docs/benchmarks.md, or record the measurement there first
(with how it was taken). Percentages and seconds are left out on purpose: they
are mostly accuracies, goals and settings (``--max-wait-ms``, ``every 5 s``),
and checking them was noise. The check is by value and not by context, so a
number that benchmarks.md holds for another reason also passes; it catches
copies that drifted, not every coincidence.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "docs" / "benchmarks.md"

NUMBER = r"\d[\d,]*(?:\.\d+)?"
UNITS = r"req/s|requests/s|ms|us|µs|ns|MB|MiB|kB|KiB|GB|GiB"
FIGURE = re.compile(
    rf"(?<![\w.,-])(?P<nums>{NUMBER}(?:\s?[-–]\s?{NUMBER})?)"
    rf"(?:x(?![\w\d])|\s?(?:{UNITS})(?![\w/]))"
)


def _value(number: str) -> float:
    return float(number.replace(",", ""))


def _prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append((number, line))
    return lines


def figures(text: str) -> list[tuple[int, str, list[str]]]:
    """Every figure in ``text``'s prose: (line, the figure as written, its numbers)."""
    return [
        (number, m.group(0), re.findall(NUMBER, m.group("nums")))
        for number, line in _prose_lines(text)
        for m in FIGURE.finditer(line)
    ]


def test_the_rule_finds_figures_and_ignores_shapes_and_code() -> None:
    text = (
        "10,004 req/s at 65-76 us, 3.80x the peer, 45.6 KiB, 1.2 ms.\n"
        "Images of 8x8, a 569 x 30 table, 10 classes, 1.5 s, 17%.\n"
        "```\nbatch-1 ms  0.164 ms\n```\n"
    )
    found = [(fig, nums) for _, fig, nums in figures(text)]
    assert found == [
        ("10,004 req/s", ["10,004"]), ("65-76 us", ["65", "76"]), ("3.80x", ["3.80"]),
        ("45.6 KiB", ["45.6"]), ("1.2 ms", ["1.2"]),
    ]


def test_docs_quote_their_figures_from_benchmarks_md() -> None:
    known = {_value(n) for n in re.findall(NUMBER, BENCHMARKS.read_text())}
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    stray = [
        f"{md.relative_to(ROOT)}:{line}: {figure!r}"
        for md in docs if md != BENCHMARKS
        for line, figure, numbers in figures(md.read_text())
        if any(_value(n) not in known for n in numbers)
    ]
    assert len(docs) > 5
    assert not stray, (
        "these figures are not in docs/benchmarks.md; quote the benchmark's figure, or record the "
        "measurement in docs/benchmarks.md first:\n" + "\n".join(stray)
    )
