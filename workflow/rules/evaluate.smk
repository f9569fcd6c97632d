rule evaluate:
    """Score the base and the final model: held-out identity, over-triggering, language, general answers,
    on single questions and in conversations."""
    input:
        base=BASE_MODEL,
        final=FINAL_MODEL,
        identity=probe_file("identity"),
        unrelated=probe_file("unrelated"),
        general=probe_file("general"),
        conversations=probe_file("conversations"),
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
        # one dict, so the names count (see rule dataset)
        settings=verbatim(
            {
                "answers": config["dataset"]["answer"],
                "device": XT["device"],  # where training ran: a GPU recipe evaluates on the GPU
                "maker": config["assistant"]["maker"],
                "max_new_tokens": config["evaluation"]["max_new_tokens"],
                "name": config["assistant"]["name"],
                "prompt_template": XT["prompt_template"],
                "system": XT["system"],
            }
        ),
    script:
        "../scripts/evaluate.py"


if config["evaluation"]["harness"]:

    rule harness:
        """Standard benchmarks through lm-evaluation-harness, base vs final (optional; see xtflow.harness)."""
        input:
            base=BASE_MODEL,
            final=FINAL_MODEL,
        output:
            json=report(paths.EVAL_HARNESS, caption="../report/harness.rst", category="Evaluation"),
        log:
            "logs/harness.log",
        benchmark:
            "benchmarks/harness.tsv"
        conda:
            XTFLOW_ENV
        params:
            harness=config["evaluation"]["harness"],
            # installing (or upgrading) lm-eval reruns the benchmark
            version=harness_version(),
        script:
            "../scripts/harness.py"
