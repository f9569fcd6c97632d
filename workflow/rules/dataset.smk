rule dataset:
    """Generate the self-cognition records and add the user's dataset files (validated)."""
    input:
        files=config["dataset"]["files"],
    output:
        json=DATASET,
    log:
        "logs/dataset.log",
    benchmark:
        "benchmarks/dataset.tsv"
    conda:
        XTFLOW_ENV
    params:
        name=verbatim(config["assistant"]["name"]),
        maker=verbatim(config["assistant"]["maker"]),
        answers=verbatim(config["dataset"]["answer"]),
        questions=verbatim(config["dataset"]["questions"]),
        records=config["dataset"]["records"],
        seed=config["dataset"]["seed"],
        general=config["dataset"]["general_records"],
        conversations=config["dataset"]["conversations"],
    script:
        "../scripts/dataset.py"
