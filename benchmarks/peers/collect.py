"""One table and calibration figures for the SDE runs, the naive baselines and the peers.

Gathers the JSON records of ``benchmarks/crps_sum.py`` (SDEs, ``rw``), ``deepar.py`` and
``score_arrays.py`` (TimeGrad) from several output folders, writes ``<out>/summary.md`` with
``crps_sum.summarize`` (same columns, mean ± std over seeds) and draws PIT histograms and a
reliability diagram of one seed per model::

    python benchmarks/peers/collect.py runs/peers/rw runs/peers/deepar runs/peers/timegrad \\
        --out runs/peers/all --figures benchmarks/figures/peers
    python benchmarks/peers/collect.py runs/etth1 runs/peers/deepar-etth1 runs/peers/timegrad-etth1 \\
        --dataset etth1 --split test --out runs/peers/all-etth1

Only records of one dataset and split (``--dataset``, needed when the folders hold several;
``--split``, default test) and never smoke runs' (``quick``) are gathered.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import HERE  # noqa: F401  (puts benchmarks/ and the checkout on sys.path)
from crps_sum import summarize


def per_seed_table(records) -> str:
    """One row per (model, NFE, seed): the numbers behind the means, for seed-stability checks."""
    lines = ["| model | NFE / step | seed | CRPS-Sum | CRPS-Sum exact | energy | cov 90% | cov 90% sum | train CPU s |",
             "|---|---|---|---|---|---|---|---|---|"]
    rows = sorted(((r["sde"], ev["nfe_per_step"], r["seed"], r, ev) for r in records for ev in r["evaluations"]),
                  key=lambda row: row[:3])
    for sde, nfe, seed, r, ev in rows:
        m = ev["metrics"]
        cpu = r.get("train_cpu_s")
        lines.append(f"| {sde} | {nfe} | {seed} | {m['CRPS-Sum']:.4f} | {m.get('CRPS-Sum-exact', float('nan')):.4f} | "
                     f"{m['energy_score']:.3f} | {m['coverage_90']:.2f} | {m.get('coverage_90_sum', float('nan')):.2f} | "
                     f"{'–' if cpu is None else f'{cpu:.0f}'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", type=Path, help="output folders holding runs/*.json")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--figures", type=Path, default=None, help="folder for the calibration figures (default <out>)")
    p.add_argument("--seed", type=int, default=0, help="seed whose calibration is drawn")
    p.add_argument("--dataset", default=None, help="dataset of the records (default: the only one found)")
    p.add_argument("--split", choices=["test", "validation"], default="test")
    args = p.parse_args(argv)

    from vsmd_ts.timeseries.plots import plot_pit_histogram, plot_reliability

    records = [json.loads(f.read_text()) for folder in args.folders for f in sorted((folder / "runs").glob("*.json"))]
    records = [r for r in records if not r.get("quick") and r["split"] == args.split
               and (args.dataset is None or r["dataset"] == args.dataset)]
    if not records:
        raise SystemExit(f"no {args.split} records found")
    datasets = sorted({r["dataset"] for r in records})
    if len(datasets) > 1:
        raise SystemExit(f"records of several datasets ({', '.join(datasets)}): choose one with --dataset")
    args.out.mkdir(parents=True, exist_ok=True)
    text = summarize(args.out, records) + "\n" + per_seed_table(records)
    (args.out / "summary.md").write_text(text)
    print(text)
    chosen = {}
    for r in records:
        ev = r["evaluations"][0]
        if r["seed"] == args.seed and "pit_counts" in (ev["metrics"] or {}):
            chosen.setdefault(f"{r['sde']} ({ev['nfe_per_step']} NFE)" if ev["nfe_per_step"] else r["sde"], ev["metrics"])
    figures = args.figures or args.out
    dataset = records[0]["dataset"]
    title = f"{dataset} {args.split}, seed {args.seed}"
    plot_pit_histogram(chosen, figures / f"{dataset}_{args.split}_pit_seed{args.seed}.png", title=title)
    plot_reliability(chosen, figures / f"{dataset}_{args.split}_reliability_seed{args.seed}.png", title=title)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
