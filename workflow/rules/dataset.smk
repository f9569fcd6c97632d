rule dataset:
    """Generate the self-cognition records and add the user's dataset files (validated)."""
    input:
        files=config["dataset"]["files"],
    output:
        json=DATASET,
    params:
        name=config["assistant"]["name"],
        maker=config["assistant"]["maker"],
        answers=config["dataset"]["answer"],
        questions=config["dataset"]["questions"],
        records=config["dataset"]["records"],
        seed=config["dataset"]["seed"],
    log:
        "logs/dataset.log",
    benchmark:
        "benchmarks/dataset.tsv"
    script:
        "../scripts/dataset.py"
