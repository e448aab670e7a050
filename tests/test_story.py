"""The notebooks' text against the numbers their own cells print (the committed outputs, which
strict nbval keeps equal to a fresh run): a claim in the prose that a printed number contradicts
fails here, so a demo cannot drift away from the sentence beside it."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _cells(name: str) -> list[dict]:
    return json.loads((ROOT / "solutions" / name).read_text(encoding="utf-8"))["cells"]


def _printed(cell: dict) -> str:
    return "".join("".join(o.get("text", "")) for o in cell.get("outputs", [])
                   if o.get("output_type") == "stream")


def _markdown_after(cells: list[dict], index: int) -> str:
    for cell in cells[index + 1:]:
        if cell["cell_type"] == "markdown":
            return "".join(cell["source"])
    raise AssertionError("no text after the cell")


def test_the_jitter_demo_shows_what_its_text_says():
    cells = _cells("02_backoff.ipynb")
    index, printed = next((i, _printed(c)) for i, c in enumerate(cells)
                          if "busiest" in _printed(c))
    peaks = {name.strip(): int(n) for name, n in
             re.findall(r"^(.+?)\s+busiest 10 ms:\s+(\d+) retries$", printed, re.M)}
    none, small, full = (peaks["no jitter (1, 2, 4, 8 s)"], peaks["+ up to 10% jitter"],
                         peaks["full jitter"])
    text = " ".join(_markdown_after(cells, index).split())
    assert "all 1,000 within the same 10 ms" in text and none == 1000
    # "smears each spike ...: the peak drops several-fold"
    assert "the peak drops several-fold" in text and small * 3 <= none
    # full jitter: "the peak drops again several-fold"
    assert "drops again several-fold" in text and full * 3 <= small
