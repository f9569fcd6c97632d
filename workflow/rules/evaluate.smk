rule evaluate:
    """Score the base and the final model: held-out identity, over-triggering, general answers."""
    input:
        base=BASE_MODEL,
        final=FINAL_MODEL,
        identity=probe_file("identity"),
        unrelated=probe_file("unrelated"),
        general=probe_file("general"),
    output:
        summary=paths.EVAL_SUMMARY,
        replies=paths.EVAL_REPLIES,
    log:
        "logs/evaluate.log",
    benchmark:
        "benchmarks/evaluate.tsv"
    conda:
        XTFLOW_ENV
    params:
        name=verbatim(config["assistant"]["name"]),
        maker=verbatim(config["assistant"]["maker"]),
        answers=verbatim(config["dataset"]["answer"]),
        prompt_template=XT["prompt_template"],
        system=verbatim(XT["system"]),
        max_new_tokens=config["evaluation"]["max_new_tokens"],
    script:
        "../scripts/evaluate.py"
