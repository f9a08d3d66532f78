"""Draw docs/figures/from-n-to-t.svg: when NPolicy, TimePolicy and their | save as items slow.

The saves come from real runs of the library on a fake clock (`resumable.testing.run_loop`),
so the figure shows what the code does, and a change of behaviour changes the figure.
`nox -s docs` runs this before it builds the site; ``--check`` exits 1 when the file in
the repository is not what this draws (tests/test_docs_figures.py runs that).

    python tools/figure_from_n_to_t.py [--check]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from resumable import NPolicy, Policy, SaveRecord, TimePolicy
from resumable.testing import run_loop

FIGURE = Path(__file__).resolve().parents[1] / "docs" / "figures" / "from-n-to-t.svg"
ITEMS = 800
FAST_ITEMS = 500  # items of 0.1 s, then items of 1 s
FAST, SLOW = 0.1, 1.0
END = FAST_ITEMS * FAST + (ITEMS - FAST_ITEMS) * SLOW  # seconds the run takes

WIDTH, LEFT, RIGHT = 720, 200, 20
ROW, TOP = 40, 50
SCALE = (WIDTH - LEFT - RIGHT) / END  # pixels per second


def seconds_per_item(item: int) -> float:
    return FAST if item < FAST_ITEMS else SLOW


def saves(policy: Policy) -> list[SaveRecord]:
    with tempfile.TemporaryDirectory() as folder:
        return run_loop(
            Path(folder) / "job.state",
            range(ITEMS),
            policy=policy,
            seconds_per_item=seconds_per_item,
        )


def x(seconds: float) -> str:
    return f"{LEFT + seconds * SCALE:.1f}"


def draw() -> str:
    """The figure, as SVG text."""
    rows = [
        ("NPolicy(100)", NPolicy(100)),
        ("TimePolicy(60)", TimePolicy(60)),
        ("NPolicy(100) | TimePolicy(60)", NPolicy(100) | TimePolicy(60)),
    ]
    height = TOP + ROW * len(rows) + 50
    slow_from = FAST_ITEMS * FAST
    lines = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="13">',
        f"<title>Saves over time as items slow from {FAST:g} s to {SLOW:g} s</title>",
        f'<rect x="{x(slow_from)}" y="{TOP - 25}" width="{(END - slow_from) * SCALE:.1f}" '
        f'height="{ROW * len(rows) + 10}" fill="#f3e6d0"/>',
        f'<text x="{x(0)}" y="{TOP - 30}">items of {FAST:g} s</text>',
        f'<text x="{x(slow_from + 5)}" y="{TOP - 30}">items of {SLOW:g} s</text>',
    ]
    for index, (label, policy) in enumerate(rows):
        y = TOP + ROW * index
        lines.append(f'<text x="10" y="{y + 4}">{label.replace("|", "&#124;")}</text>')
        lines.append(f'<line x1="{x(0)}" y1="{y}" x2="{x(END)}" y2="{y}" stroke="#999"/>')
        for save in saves(policy):
            colour = "#1f5fa8" if save.reason == "policy" else "#999"
            lines.append(
                f'<line x1="{x(save.seconds)}" y1="{y - 12}" x2="{x(save.seconds)}" '
                f'y2="{y + 12}" stroke="{colour}" stroke-width="3">'
                f"<title>item {save.position}, {save.seconds:g} s, {save.reason}</title></line>"
            )
    axis = TOP + ROW * len(rows) - 10
    lines.append(f'<line x1="{x(0)}" y1="{axis}" x2="{x(END)}" y2="{axis}" stroke="#333"/>')
    for second in range(0, int(END) + 1, 50):
        lines.append(
            f'<line x1="{x(second)}" y1="{axis}" x2="{x(second)}" y2="{axis + 5}" stroke="#333"/>'
        )
        lines.append(f'<text x="{x(second)}" y="{axis + 20}" text-anchor="middle">{second}</text>')
    lines.append(
        f'<text x="{x(END / 2)}" y="{axis + 40}" text-anchor="middle">seconds since the loop '
        "started (each mark a save; grey: the save at the end of the input)</text>"
    )
    lines.append("</svg>")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    figure = draw()
    if argv == ["--check"]:
        current = FIGURE.read_text(encoding="utf-8") if FIGURE.exists() else ""
        if current != figure:
            print(f"{FIGURE} is out of date: run python {sys.argv[0]}", file=sys.stderr)
            return 1
        return 0
    FIGURE.parent.mkdir(exist_ok=True)
    FIGURE.write_text(figure, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
