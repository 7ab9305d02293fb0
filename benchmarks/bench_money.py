"""A month's bill with and without routing, from a quality report of bench_quality.py.

    python benchmarks/bench_money.py [--report docs/reports/quality.json] [--config default]
        [--requests 1000000] [--input-tokens 400]

For each pair protocol of the report (gpt-4-1106-preview / Mixtral-8x7B-Instruct-v0.1 at the
built-in list prices, router_ml/core/prices.json), one request costs ``(input price x
input tokens + output price x 256) / 1e6`` USD (docs/protocols.md); the bills are
``router_ml.learn.budget.cost_summary``'s. A month of ``--requests``
requests costs: everything to the strong model; routed by the configuration's threshold
calibrated on its training rows for 80 % of the strong model's quality gain, with the
strong-call share and the PGR that threshold reached on the test rows (``at_knob`` of the
report); and routed at CPT(50%), the strong-call share that buys half of the gain on the test
rows. Everything to the weak model is the floor. Prints a Markdown table (the README's and
the documentation's).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STRONG, WEAK = "gpt-4-1106-preview", "Mixtral-8x7B-Instruct-v0.1"
PROTOCOLS = ("mmlu", "gsm8k", "arena-hard", "mmlu-to-gsm8k", "loso-arena-hard")


def bill_table(report: dict, config: str, requests: int, input_tokens: int) -> str:
    from router_ml.core.prices import OUTPUT_TOKENS
    from router_ml.learn.budget import TrafficProfile, cost_summary

    traffic = TrafficProfile(requests, input_tokens, OUTPUT_TOKENS)
    bill = lambda share: cost_summary(share, traffic, strong=STRONG, weak=WEAK)  # noqa: E731
    ends = bill(0.0)
    lines = [f"| protocol (test rows) | all to {STRONG} | all to {WEAK} | routed for 80 % of "
             "the gain: strong calls, bill, saving (gain kept) | routed for half the gain |",
             "|---|---|---|---|---|"]
    for p in PROTOCOLS:
        row = report.get(p, {}).get("rows", {}).get(config)
        if row is None:
            continue
        k, half = bill(row["at_knob"]["strong_share"]), bill(row["cpt50"])
        lines.append(f"| {p} | ${ends.always_strong:,.0f} | ${ends.always_weak:,.0f} | "
                     f"{100 * k.share:.0f} %, ${k.router:,.0f}, {k.saving_pct:.0f} % "
                     f"({100 * row['at_knob']['pgr']:.0f} %) | {100 * half.share:.0f} %, "
                     f"${half.router:,.0f}, {half.saving_pct:.0f} % |")
    if len(lines) == 2:  # the header alone
        raise SystemExit(f"the report has no pair protocol with a row for {config!r}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--report", type=Path, default=ROOT / "docs" / "reports" / "quality.json")
    p.add_argument("--config", default="default")
    p.add_argument("--requests", type=int, default=1_000_000, help="requests per month")
    p.add_argument("--input-tokens", type=int, default=400, help="input tokens per request")
    args = p.parse_args(argv)
    print(bill_table(json.loads(args.report.read_text()), args.config, args.requests,
                     args.input_tokens), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
