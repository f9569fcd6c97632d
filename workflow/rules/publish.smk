# Publish (README "Publish"): build the model hub repositories locally (rule publish, part of the
# default target); upload them only when asked (rule push: `snakemake --cores 1 push`).


rule publish:
    """The merged model and the adapter as model hub repositories, each with its model card."""
    input:
        model=FINAL_MODEL,
        adapter=ADAPTER,
        base=BASE_MODEL,
        dataset=DATASET,
        summary=paths.EVAL_SUMMARY,
        replies=paths.EVAL_REPLIES,
        loss=rules.loss_curve.output.csv,
    output:
        model=directory(paths.PUBLISH_MODEL),
        adapter=directory(paths.PUBLISH_ADAPTER),
    log:
        "logs/publish.log",
    benchmark:
        "benchmarks/publish.tsv"
    conda:
        XTFLOW_ENV
    params:
        settings=verbatim(card_settings(config)),
    script:
        "../scripts/publish.py"


# push runs where Snakemake runs (localrule), whose network, token and git credentials were checked
# at start, not on a cluster's compute node.
rule push:
    """Upload the published folders to publish.repo_id (and publish.adapter_repo_id): only this target pushes."""
    input:
        model=paths.PUBLISH_MODEL,
        adapter=paths.PUBLISH_ADAPTER,
    output:
        record=paths.PUSH_RECORD,
    log:
        "logs/push.log",
    benchmark:
        "benchmarks/push.tsv"
    localrule: True
    conda:
        XTFLOW_ENV
    params:
        settings=verbatim(config["publish"]),
    script:
        "../scripts/push.py"
