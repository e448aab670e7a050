"""``python -m llm_patterns demo``: a simulated day of pipeline traffic, for people without Jupyter.

Ten minutes of requests on a virtual clock (a rate-limited primary that goes down for two
minutes, a secondary, a budget) replay in about a second; the command prints a summary table and,
with ``--report FILE.html``, writes a standalone plotly report.
"""

from __future__ import annotations

import argparse
import html
import sys
from typing import TextIO

from .simulation import Scenario, Simulation, SimulationResult

__all__ = ["add_parser", "run", "run_demo"]


def _outage(text: str) -> tuple[float, float] | None:
    if text.lower() == "none":
        return None
    try:
        start, end = (float(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--outage takes START:END in seconds or 'none', got {text!r}") from None
    if not 0 <= start < end:
        raise argparse.ArgumentTypeError(f"--outage needs 0 <= START < END, got {text!r}")
    return start, end


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("demo", help="simulate pipeline traffic through ResilientClient",
                              description=__doc__)
    d = Scenario()
    p.add_argument("--duration", type=float, default=d.duration, help="seconds of traffic (600)")
    p.add_argument("--rate", type=float, default=d.request_rate, help="requests per second (2)")
    p.add_argument("--rpm", type=int, default=d.primary_rpm, help="primary's requests/minute")
    p.add_argument("--tpm", type=int, default=d.primary_tpm, help="primary's tokens/minute")
    p.add_argument("--outage", type=_outage, default=d.outage,
                   help="START:END seconds when the primary answers 503, or 'none' (180:300)")
    p.add_argument("--error-rate", type=float, default=d.error_rate)
    p.add_argument("--budget", type=float, default=d.budget, help="USD (2.0)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--report", metavar="FILE.html", help="write a standalone plotly report")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def _progress_bar(out: TextIO):
    def show(fraction: float) -> None:
        filled = int(fraction * 30)
        out.write(f"\r  simulating [{'#' * filled}{'.' * (30 - filled)}] {fraction:4.0%}")
        if fraction >= 1.0:
            out.write("\n")
        out.flush()

    return show


def run_demo(scenario: Scenario, *, report: str | None = None, progress: bool = True,
             out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> SimulationResult:
    sim = Simulation(scenario)
    result = sim.run_sync(_progress_bar(err) if progress else None)
    out.write(f"{scenario.duration:g} s of traffic at {scenario.request_rate:g} req/s, "
              f"primary limited to {scenario.primary_rpm} RPM / {scenario.primary_tpm} TPM, "
              f"outage {scenario.outage}, seed {scenario.seed}\n\n")
    out.write(result.table() + "\n")
    if report:
        from .charts import timeline_figure, write_report

        fig = timeline_figure(result.timeline, budget=scenario.budget)
        rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>"
                       for k, v in result.summary_rows())
        write_report(report, [fig], title="LLM retry patterns: simulated pipeline run",
                     summary_html=f"<table>{rows}</table>")
        out.write(f"\nreport written to {report}\n")
    return result


def run(args: argparse.Namespace) -> int:
    try:
        scenario = Scenario(duration=args.duration, request_rate=args.rate, primary_rpm=args.rpm,
                            primary_tpm=args.tpm, outage=args.outage, error_rate=args.error_rate,
                            budget=args.budget, seed=args.seed)
    except ValueError as err:
        print(f"demo: {err}", file=sys.stderr)
        return 2
    run_demo(scenario, report=args.report, progress=not args.quiet)
    return 0
