"""Measure one setting of the balanced recipe's levers: run the workflow with config overrides and
print the evaluation's figures (with their 95% intervals) and the stage times.

    python bench/levers.py RUN_DIR [--probes dev|shipped] [KEY=YAML_VALUE ...]

    # e.g. tune on the dev split, with the base model of an earlier run (skips general_skill):
    python bench/levers.py /tmp/lever-conv24 base_model.path=/tmp/default/resources/base_model \\
        dataset.conversations=24

RUN_DIR gets config/config.yaml (the embedded default plus the overrides) and the run's results.
`--probes dev` (the default) evaluates on bench/dev_probes/, the split the recipe is tuned on;
`--probes shipped` on the shipped probe sets, for the one final measurement.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DEV = REPO / "bench" / "dev_probes"
SHOWN = [
    ("single", "identity_accuracy"),
    ("single", "identity_in_language"),
    ("single", "over_trigger_rate"),
    ("single", "language_consistency"),
    ("conversation", "identity_accuracy"),
    ("conversation", "over_trigger_rate"),
    ("conversation", "general_accuracy"),
    ("single", "retention"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--probes", choices=["dev", "shipped"], default="dev")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("overrides", nargs="*", metavar="KEY=YAML_VALUE")
    args = parser.parse_intermixed_args()

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))
    for item in args.overrides:
        key, _, value = item.partition("=")
        *parents, last = key.split(".")
        node = config
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = yaml.safe_load(value)
    if args.probes == "dev":
        config["evaluation"].update(
            identity=str(DEV / "identity.txt"),
            unrelated=str(DEV / "unrelated.txt"),
            conversations=str(DEV / "conversations.tsv"),
        )
    path = args.run_dir / "config" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(args.run_dir)]
    subprocess.run([*cmd, "--cores", str(args.cores), "results/eval/summary.csv"], check=True)

    with (args.run_dir / "results" / "eval" / "summary.csv").open(encoding="utf-8") as f:
        rows = {(r["model"], r["probes"], r["metric"]): r for r in csv.DictReader(f)}
    print(f"levers: {' '.join(args.overrides) or '(embedded default)'}; probes: {args.probes}")
    for probes, metric in SHOWN:
        r = rows.get(("final", probes, metric))
        if r:
            print(f"  final {probes:12} {metric:22} {r['value']} [{r['low']}, {r['high']}] n {r['n']}")
    for rule in ("general_skill", "train", "evaluate"):
        bench = args.run_dir / "benchmarks" / f"{rule}.tsv"
        if bench.is_file():
            with bench.open(encoding="utf-8") as f:
                print(f"  {rule} stage: {float(next(csv.DictReader(f, delimiter=chr(9)))['s']):.0f} s")


if __name__ == "__main__":
    main()
