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
        # one dict, so the names count: Snakemake compares a rule's params as a set of values, in which
        # records: 128 next to general_records: 128 looks the same as records: 48
        spec=verbatim(
            {
                "answers": config["dataset"]["answer"],
                "conversations": config["dataset"]["conversations"],
                "general": config["dataset"]["general_records"],
                "maker": config["assistant"]["maker"],
                "name": config["assistant"]["name"],
                "questions": config["dataset"]["questions"],
                "records": config["dataset"]["records"],
                "seed": config["dataset"]["seed"],
            }
        ),
    script:
        "../scripts/dataset.py"
