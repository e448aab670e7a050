"""What the benchmark scripts share: the seeded workload, the command line, the JSON/README output.

Each script (``rate_limit_utilization.py``, ``estimate_mismatch.py``, ``outage.py``,
``overhead.py``, ``simulation_speed.py``) builds a result dict, and ``finish()`` prints it as
JSON on stdout, writes it under ``benchmarks/results/`` and, unless ``--quick`` or
``--no-readme``, appends one history row to the script's table in ``benchmarks/README.md`` and
replaces the "latest run" detail table there.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import math
import os
import platform
import random
import re
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:  # run as `python benchmarks/x.py` from anywhere
    sys.path.insert(0, str(ROOT))

from llm_patterns.tokens import estimate_tokens  # noqa: E402

RESULTS_DIR = HERE / "results"
README = HERE / "README.md"
MODEL = "gpt-4o-mini"
PEER_PACKAGES = ("llm-patterns", "httpx", "tenacity", "openai", "aiolimiter", "pyrate-limiter",
                 "pybreaker")
_WORDS = ("pipeline", "invoice", "customer", "shipment", "report", "delay", "quarter", "revenue",
          "incident", "forecast", "summary", "contract", "ledger", "warehouse", "audit", "the",
          "of", "and", "for", "with")


# ----------------------------------------------------------------------------- workload

@dataclass(frozen=True)
class Request:
    """One request of the workload: its prompt, max_tokens, and what both sides charge."""

    index: int
    prompt: str
    max_tokens: int

    @property
    def tokens(self) -> int:
        """What the limiter and the mock charge: estimate_tokens(prompt) + max_tokens."""
        return estimate_tokens(self.prompt) + self.max_tokens


def _text(rng: random.Random, chars: int) -> str:
    out: list[str] = []
    n = 0
    while n < chars:
        w = rng.choice(_WORDS)
        out.append(w)
        n += len(w) + 1
    return " ".join(out)[:chars]


def workload(n: int, seed: int = 0) -> list[Request]:
    """``n`` seeded requests of mixed sizes: 70% short prompts (200-1,200 characters), 25% medium
    (1,200-4,000), 5% long (4,000-12,000); max_tokens one of 128, 256, 512, 1024."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        r = rng.random()
        lo, hi = (200, 1200) if r < 0.70 else (1200, 4000) if r < 0.95 else (4000, 12000)
        out.append(Request(i, _text(rng, rng.randint(lo, hi)), rng.choice((128, 256, 512, 1024))))
    return out


def theoretical_minimum(reqs: Sequence[Request], rpm: float, tpm: float, burst_seconds: float,
                        latency: float, tpm_multiplier: float = 1.0) -> float:
    """A lower bound on the wall time of any client: the last request cannot be admitted before
    both server buckets have refilled what the workload needs beyond their starting capacity,
    and then it still takes ``latency`` to answer. ``tpm_multiplier``: the server's count."""
    r_rate, t_rate = rpm / 60.0, tpm / 60.0
    total_tokens = sum(
        math.ceil(round(estimate_tokens(q.prompt) * tpm_multiplier, 6)) + q.max_tokens
        for q in reqs
    )
    need_r = max(0.0, len(reqs) - r_rate * burst_seconds) / r_rate
    need_t = max(0.0, total_tokens - t_rate * burst_seconds) / t_rate
    return max(need_r, need_t) + latency


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) by linear interpolation; None for no values."""
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def rnd(x: Any, nd: int = 3) -> Any:
    """Round floats for JSON; leave everything else alone."""
    if isinstance(x, float):
        return round(x, nd) if math.isfinite(x) else None
    return x


# ----------------------------------------------------------------------------- command line

def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true",
                   help="tiny workload (seconds); does not touch README.md unless --readme")
    p.add_argument("--repeats", type=int, default=None,
                   help="runs per client; the median run is reported")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR,
                   help="where the JSON result goes (default benchmarks/results)")
    p.add_argument("--readme", type=Path, default=None,
                   help="README to append the row to (default benchmarks/README.md; with "
                        "--quick only when given)")
    p.add_argument("--no-readme", action="store_true", help="do not touch any README")
    return p


def quiet_logs() -> None:
    """Retries and 429s are the point of these runs; their WARNINGs would drown the output."""
    logging.getLogger("llm_patterns").setLevel(logging.ERROR)
    for name in ("httpx", "openai", "tenacity", "pybreaker", "pyrate_limiter", "aiolimiter"):
        logging.getLogger(name).setLevel(logging.ERROR)


# ----------------------------------------------------------------------------- environment

def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in PEER_PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "missing"
    return out


def machine() -> dict[str, Any]:
    return {"platform": platform.platform(), "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine()}


def short_versions(v: dict[str, str]) -> str:
    names = {"llm-patterns": "ours", "tenacity": "tenacity", "openai": "openai",
             "aiolimiter": "aiolimiter", "pyrate-limiter": "pyrate", "pybreaker": "pybreaker"}
    parts = [f"py {v.get('python')}"]
    parts += [f"{short} {v[k]}" for k, short in names.items() if k in v and v[k] != "missing"]
    return ", ".join(parts)


# ----------------------------------------------------------------------------- output

def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 10 else f"{v:.2f}" if abs(v) < 1000 else f"{v:,.0f}"
        if isinstance(v, int) and not isinstance(v, bool):
            return f"{v:,}" if abs(v) >= 10_000 else str(v)
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _update_readme(path: Path, name: str, history_headers: Sequence[str],
                   history_row: Sequence[Any], detail: str) -> None:
    """Append ``history_row`` to the table between the ``history`` markers for ``name`` and
    replace the block between its ``latest`` markers; create both sections if missing."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    h_start, h_end = f"<!-- history:{name} start -->", f"<!-- history:{name} end -->"
    l_start, l_end = f"<!-- latest:{name} start -->", f"<!-- latest:{name} end -->"
    row = markdown_table(history_headers, [history_row]).splitlines()[2]
    if h_start not in text or h_end not in text:
        text = text.rstrip("\n") + (
            f"\n\n### {name}\n\n{l_start}\n{l_end}\n\nHistory (one row per full run):\n\n"
            f"{h_start}\n{h_end}\n"
        )
    before, rest = text.split(h_start, 1)
    table, after = rest.split(h_end, 1)
    table = table.strip("\n")
    if not table:
        table = "\n".join(markdown_table(history_headers, []).splitlines()[:2])
    table = f"{table}\n{row}"
    text = f"{before}{h_start}\n{table}\n{h_end}{after}"
    if l_start in text and l_end in text:
        before, rest = text.split(l_start, 1)
        _, after = rest.split(l_end, 1)
        text = f"{before}{l_start}\n{detail.strip()}\n{l_end}{after}"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def finish(args: argparse.Namespace, name: str, result: dict[str, Any], *,
           history_headers: Sequence[str], history_row: Sequence[Any], detail: str) -> None:
    """Print ``result`` as JSON, write it under ``--results-dir``, update the README."""
    result = {"benchmark": name, "date": _dt.datetime.now(_dt.UTC).strftime(
        "%Y-%m-%d %H:%M UTC"), "quick": bool(args.quick), "versions": versions(),
        "machine": machine(), **result}
    text = json.dumps(result, indent=2, default=str)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if args.quick else ""
    (args.results_dir / f"{name}{suffix}.json").write_text(text + "\n", encoding="utf-8")
    readme = args.readme
    if readme is None and not args.quick:
        readme = README
    if readme is not None and not args.no_readme:
        row = [result["date"][:10], *history_row]
        _update_readme(readme, name, ["date", *history_headers], row,
                       f"Latest full run: {result['date']}; {short_versions(result['versions'])}"
                       f"; {machine()['cpus']} CPUs.\n\n{detail}")
    print(text, flush=True)


def best(rows: Sequence[dict[str, Any]], key: str,
         where: Callable[[dict[str, Any]], bool] = lambda r: True) -> dict[str, Any] | None:
    cands = [r for r in rows if where(r) and r.get(key) is not None]
    return max(cands, key=lambda r: r[key]) if cands else None


_SLUG = re.compile(r"[^a-z0-9]+")


def slug(text: str) -> str:
    return _SLUG.sub("_", text.lower()).strip("_")
