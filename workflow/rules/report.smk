# Pieces of `snakemake --report report.html report_files` (see README "Report").


rule loss_curve:
    """Plot the training loss from XTuner's logged scalars (work dir vis_data/scalars.json)."""
    input:
        checkpoint=CHECKPOINT,
    output:
        png=report("results/report/loss.png", caption="../report/loss.rst", category="Training"),
        csv="results/report/loss.csv",
    log:
        "logs/report/loss_curve.log",
    benchmark:
        "benchmarks/report/loss_curve.tsv"
    conda:
        XTFLOW_ENV
    params:
        work_dir=WORK_DIR,
    script:
        "../scripts/report.py"


rule evaluation_page:
    """The evaluation summary (base vs final) as a report table."""
    input:
        summary=paths.EVAL_SUMMARY,
    output:
        html=report("results/report/evaluation.html", caption="../report/evaluation.rst", category="Evaluation"),
    log:
        "logs/report/evaluation_page.log",
    benchmark:
        "benchmarks/report/evaluation_page.tsv"
    conda:
        XTFLOW_ENV
    script:
        "../scripts/report.py"


rule replies_page:
    """Every probe's reply, base vs final side by side, the final model's failures first."""
    input:
        replies=paths.EVAL_REPLIES,
    output:
        html=report("results/report/replies.html", caption="../report/replies.rst", category="Evaluation"),
    log:
        "logs/report/replies_page.log",
    benchmark:
        "benchmarks/report/replies_page.tsv"
    conda:
        XTFLOW_ENV
    script:
        "../scripts/report.py"


rule dataset_stats:
    """Records, unique pairs, duplicate share and token lengths of the training set."""
    input:
        dataset=DATASET,
        model=BASE_MODEL,
        config=XTUNER_CONFIG,
    output:
        html=report("results/report/dataset.html", caption="../report/dataset.rst", category="Dataset"),
        png=report("results/report/token_lengths.png", caption="../report/dataset.rst", category="Dataset"),
    log:
        "logs/report/dataset_stats.log",
    benchmark:
        "benchmarks/report/dataset_stats.tsv"
    conda:
        XTFLOW_ENV
    script:
        "../scripts/report.py"


rule run_info:
    """The validated configuration, the base model's source (a hub model's commit) and the package versions."""
    input:
        model=BASE_MODEL,
    output:
        html=report("results/report/run.html", caption="../report/run.rst", category="Run"),
    log:
        "logs/report/run_info.log",
    benchmark:
        "benchmarks/report/run_info.tsv"
    conda:
        XTFLOW_ENV
    params:
        config=config,
    script:
        "../scripts/report.py"


rule report_files:
    """Everything the report shows: `snakemake --cores 2 report_files`, then
    `snakemake --report report.html report_files`."""
    input:
        rules.loss_curve.output,
        rules.evaluation_page.output,
        rules.replies_page.output,
        rules.dataset_stats.output,
        rules.run_info.output,
        paths.EVAL_HARNESS if config["evaluation"]["harness"] else [],
