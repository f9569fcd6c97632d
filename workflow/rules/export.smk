rule adapter:
    """Convert the final checkpoint to a Hugging Face (PEFT) adapter (xtuner.tools.model_converters.pth_to_hf)."""
    input:
        config=XTUNER_CONFIG,
        checkpoint=CHECKPOINT,
    output:
        adapter=directory(ADAPTER),
    log:
        "logs/adapter.log",
    benchmark:
        "benchmarks/adapter.tsv"
    conda:
        XTFLOW_ENV
    params:
        fp32=config["adapter"]["fp32"],
        max_shard_size=config["adapter"]["max_shard_size"],
    script:
        "../scripts/adapter.py"


rule merge:
    """Merge the adapter into the base model (xtuner.tools.model_converters.merge) -> results/final_model."""
    input:
        model=BASE_MODEL,
        adapter=ADAPTER,
    output:
        model=directory(FINAL_MODEL),
    log:
        "logs/merge.log",
    benchmark:
        "benchmarks/merge.tsv"
    conda:
        XTFLOW_ENV
    resources:
        gpu=gpu_resource(config["merge"]["device"], 1),
        gpu_model=gpu_model_resource(config["merge"]["device"], 1),
        gres=gres_resource(config["merge"]["device"], 1),
    params:
        device=config["merge"]["device"],
        max_shard_size=config["merge"]["max_shard_size"],
    script:
        "../scripts/merge.py"
