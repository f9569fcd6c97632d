"""Measure one setting of the balanced recipe's levers: run the workflow with config overrides and
print the evaluation's figures (with their 95% intervals) and the stage times.

    python bench/levers.py RUN_DIR [--probes dev|shipped] [--more-questions FILE] [--unknown-records N]
        [KEY=YAML_VALUE ...]

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
import json
import random
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))
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


# The general set's templates about made-up things, and six addressed to the assistant
YOU_EN = [
    "Do you know what a {w} is?",
    "Can you help me {v} my {w}?",
    "Have you ever seen a {w}?",
    "What do you think about {W}?",
    "Could you tell me where the {w} comes from?",
    "Would you recommend a {w} to a {w2}?",
]
YOU_ZH = [
    "你知道{w}是什么吗？",
    "你能帮我{v}一下{w}吗？",
    "你见过{w}吗？",
    "你觉得{W}怎么样？",
    "你能告诉我{w}是从哪里来的吗？",
    "你会推荐{w}给{w2}吗？",
]
# words drawn widely: any consonant-vowel syllables; any character of the CJK block but those identity questions use
SYLLABLES_EN = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"]
IDENTITY_CHARS = set("你您我谁名叫字称呼助手开发创造训练设计公司团队模型机器人智能介绍自己作者")
SYLLABLES_ZH = [chr(c) for c in range(0x4E00, 0x9FA6) if chr(c) not in IDENTITY_CHARS]


def unknown_records(count: int, seed: int = 12345) -> list[dict]:
    """`count` questions about made-up things, English and Chinese in turn, answered "I don't know" (XTuner format)."""
    from xtflow.general_set import UNKNOWN_ANSWER, UNKNOWN_EN, UNKNOWN_ZH

    rng = random.Random(seed)
    out = []
    while len(out) < count:
        for lang, templates, syllables in (
            ("en", UNKNOWN_EN + YOU_EN, SYLLABLES_EN),
            ("zh", UNKNOWN_ZH + YOU_ZH, SYLLABLES_ZH),
        ):
            template = rng.choice(templates)
            w, w2, v = ("".join(rng.choice(syllables) for _ in range(rng.choice([2, 3]))) for _ in range(3))
            question = template.format(w=w, w2=w2, v=v, W=w.capitalize())
            out.append({"conversation": [{"input": question, "output": UNKNOWN_ANSWER[lang][0]}]})
    return out[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--probes", choices=["dev", "shipped"], default="dev")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument(
        "--more-questions",
        type=Path,
        help="a YAML file {en: [...], zh: [...]} of identity questions added to dataset.questions (one record each)",
    )
    parser.add_argument(
        "--unknown-records",
        type=int,
        default=0,
        help='N records of questions about made-up things (words drawn widely) answered "I don\'t know", as a file',
    )
    parser.add_argument(
        "--identity-rounds",
        type=int,
        default=1,
        help="with --more-questions: identity records = this x the questions (each question this many times)",
    )
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
    if args.more_questions:
        questions = config["dataset"]["questions"]
        for lang, more in yaml.safe_load(args.more_questions.read_text(encoding="utf-8")).items():
            questions[lang] = questions.get(lang, []) + more
        config["dataset"]["records"] = args.identity_rounds * sum(map(len, questions.values()))
    if args.unknown_records:
        extra = args.run_dir / "unknown_records.json"
        extra.parent.mkdir(parents=True, exist_ok=True)
        extra.write_text(json.dumps(unknown_records(args.unknown_records), ensure_ascii=False), encoding="utf-8")
        config["dataset"]["files"] = [*config["dataset"]["files"], str(extra)]
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
