rule evaluate:
    """Score the base and the final model: held-out identity, over-triggering, general answers."""
    input:
        base=BASE_MODEL,
        final=FINAL_MODEL,
        identity=probe_file("identity"),
        unrelated=probe_file("unrelated"),
        general=probe_file("general"),
    output:
        summary="results/eval/summary.csv",
        replies="results/eval/replies.csv",
    params:
        name=verbatim(config["assistant"]["name"]),
        maker=verbatim(config["assistant"]["maker"]),
        answers=verbatim(config["dataset"]["answer"]),
        prompt_template=XT["prompt_template"],
        system=verbatim(XT["system"]),
        max_new_tokens=config["evaluation"]["max_new_tokens"],
    log:
        "logs/evaluate.log",
    benchmark:
        "benchmarks/evaluate.tsv"
    script:
        "../scripts/evaluate.py"
