"""Snakemake job: score base and final model (see xtflow.evaluate)."""

from pathlib import Path

from xtflow.chat_model import RunSettings
from xtflow.evaluate import evaluate, load_probes
from xtflow.snakemake_io import run_job

snakemake = snakemake  # noqa: F821 (injected by Snakemake)


def job(log: Path) -> None:
    p, i, o = snakemake.params.settings, snakemake.input, snakemake.output
    # a base model taught the general set (the tiny default) is held to its references; a real
    # model is compared with its own replies
    basis = "reference" if (Path(i.base) / "xtflow_general_skill.json").is_file() else "base_reply"
    probes = load_probes(Path(i.identity), Path(i.unrelated), Path(i.general), Path(i.conversations))
    rows = evaluate(
        Path(i.base),
        Path(i.final),
        RunSettings(p["prompt_template"], p["system"]),
        probes,
        p["name"],
        p["maker"],
        dict(p["answers"]),
        p["max_new_tokens"],
        Path(o.summary),
        Path(o.replies),
        basis,
        p["device"],
    )
    print(f"xtflow: retention measured against {'the references' if basis == 'reference' else 'the base replies'}")
    for r in rows:
        interval = f" [{r['low']}, {r['high']}]" if r["low"] else ""
        print(f"xtflow: {r['model']} {r['probes']}: {r['metric']} {r['value']}{interval} (n {r['n']})")


run_job(snakemake, job)
