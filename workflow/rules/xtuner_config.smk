rule xtuner_config:
    """Write the XTuner config: a built-in config with config.yaml's values patched in."""
    input:
        model=BASE_MODEL,
    output:
        config=XTUNER_CONFIG,
    log:
        "logs/xtuner_config.log",
    benchmark:
        "benchmarks/xtuner_config.tsv"
    conda:
        XTFLOW_ENV
    params:
        base_config=XT["base_config"],
        data=DATASET,
        xtuner=verbatim({k: v for k, v in XT.items() if k != "base_config"}),
    script:
        "../scripts/xtuner_config.py"
