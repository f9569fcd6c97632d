rule base_model:
    """Link the local base model (checked) into resources/, or build the tiny embedded default."""
    output:
        model=directory(BASE_MODEL),
    params:
        path=config["base_model"]["path"],
        tiny=config["base_model"]["tiny"],
    log:
        "logs/base_model.log",
    benchmark:
        "benchmarks/base_model.tsv"
    script:
        "../scripts/base_model.py"
