# The LLaVA target: the tutorial's multimodal fine-tune (`snakemake --cores 2 llava`), not part of `all`.
#
# llava_visual_encoder -> llava_data (pretrain, finetune, test) -> llava_config (pretrain, finetune)
# -> llava_train (pretrain: the projector; finetune: LoRA of LLM and visual encoder, from that projector)
# -> llava_adapter (pth_to_hf of each stage) -> llava_evaluate (projector-only vs fine-tuned on held-out
# images) and llava_merge (adapters merged) -> llava_evaluation_page (the report's piece).


wildcard_constraints:
    stage="|".join(paths.LLAVA_STAGES),
    split="|".join(paths.LLAVA_SPLITS),


if LLAVA["visual_encoder"]["path"] is None:

    rule llava_visual_encoder:
        """Build the tiny CLIP vision tower and its image processor (random weights, seeded)."""
        output:
            encoder=directory(paths.LLAVA_VISUAL_ENCODER),
        log:
            "logs/llava/visual_encoder.log",
        benchmark:
            "benchmarks/llava/visual_encoder.tsv"
        conda:
            XTFLOW_ENV
        params:
            tiny=LLAVA["visual_encoder"]["tiny"],
        script:
            "../scripts/llava_visual_encoder.py"


rule llava_data:
    """One data split in LLaVA's format: your records (checked) or the generated coloured shapes."""
    input:
        unpack(lambda w: LLAVA["data"][w.split] or {}),
    output:
        split=directory(paths.llava_data("{split}")),
    log:
        "logs/llava/data_{split}.log",
    benchmark:
        "benchmarks/llava/data_{split}.tsv"
    conda:
        XTFLOW_ENV
    params:
        user=lambda w: LLAVA["data"][w.split],
        generated=lambda w: {
            k: v for k, v in LLAVA["data"]["generated"].items() if k in (w.split, "seed", "image_size")
        },
    script:
        "../scripts/llava_data.py"


rule llava_config:
    """Write a stage's XTuner config: the tutorial's built-in LLaVA config with config.yaml's values."""
    output:
        config=paths.llava_xtuner_config("{stage}"),
    log:
        "logs/llava/config_{stage}.log",
    benchmark:
        "benchmarks/llava/config_{stage}.tsv"
    conda:
        XTFLOW_ENV
    params:
        base_config=lambda w: LLAVA[w.stage]["base_config"],
        settings=llava_stage_settings,
    script:
        "../scripts/llava_config.py"


rule llava_train:
    """Train a stage with XTuner (python -m xtuner.tools.train); publish its final checkpoint."""
    input:
        unpack(llava_train_input),
    output:
        checkpoint=paths.llava_checkpoint("{stage}"),
    log:
        "logs/llava/train_{stage}.log",
    benchmark:
        "benchmarks/llava/train_{stage}.tsv"
    conda:
        XTFLOW_ENV
    # on a CPU, torch's threads gain nothing on the tiny models' small matrices (measured: 1 thread was
    # 2x faster than 2 on two busy cores); on a GPU, more CPU threads feed the data loader
    threads: 1 if LLAVA["device"] == "cpu" else 4
    resources:
        gpu=gpu_resource(LLAVA["device"], 1),
        gpu_model=gpu_model_resource(LLAVA["device"], 1),
        gres=gres_resource(LLAVA["device"], 1),
    params:
        work_dir=paths.llava_work_dir("{stage}"),
        warmup_ratio=LLAVA["warmup_ratio"],
        # who named the projector fine-tuning starts from, for the message if it holds none
        projector_source=(
            "config key 'llava.pretrained_projector'" if LLAVA["pretrained_projector"] else "the pretrain stage"
        ),
    script:
        "../scripts/llava_train.py"


rule llava_adapter:
    """Export a stage's checkpoint in XTuner's LLaVA layout (pth_to_hf): projector (+ LoRA adapters)."""
    input:
        config=paths.llava_xtuner_config("{stage}"),
        checkpoint=lambda w: llava_checkpoint(w.stage),
    output:
        adapter=directory(paths.llava_export("{stage}")),
    log:
        "logs/llava/adapter_{stage}.log",
    benchmark:
        "benchmarks/llava/adapter_{stage}.tsv"
    conda:
        XTFLOW_ENV
    params:
        fp32=llava_export_in_fp32,
        max_shard_size=LLAVA["adapter"]["max_shard_size"],
    script:
        "../scripts/adapter.py"


rule llava_evaluate:
    """Held-out image accuracy: the projector-only model (after pretraining) vs the fine-tuned one."""
    input:
        llm=LLAVA_LLM,
        visual_encoder=LLAVA_VISUAL_ENCODER,
        projector_only=paths.llava_export("pretrain"),
        finetuned=paths.llava_export("finetune"),
        test=paths.llava_data("test"),
    output:
        summary=paths.LLAVA_EVAL_SUMMARY,
        replies=paths.LLAVA_EVAL_REPLIES,
    log:
        "logs/llava/evaluate.log",
    benchmark:
        "benchmarks/llava/evaluate.tsv"
    conda:
        XTFLOW_ENV
    resources:
        gpu=gpu_resource(LLAVA["device"], 1),
        gpu_model=gpu_model_resource(LLAVA["device"], 1),
        gres=gres_resource(LLAVA["device"], 1),
    params:
        prompt_template=LLAVA["prompt_template"],
        max_new_tokens=LLAVA["evaluation"]["max_new_tokens"],
        device=LLAVA["device"],
    script:
        "../scripts/llava_evaluate.py"


rule llava_merge:
    """Merge the fine-tuned adapters into LLM and visual encoder, each in its own dtype (xtflow.export)."""
    input:
        llm=LLAVA_LLM,
        visual_encoder=LLAVA_VISUAL_ENCODER,
        export=paths.llava_export("finetune"),
    output:
        merged=directory(paths.LLAVA_MERGED),
    log:
        "logs/llava/merge.log",
    benchmark:
        "benchmarks/llava/merge.tsv"
    conda:
        XTFLOW_ENV
    resources:
        gpu=gpu_resource(LLAVA["merge"]["device"], 1),
        gpu_model=gpu_model_resource(LLAVA["merge"]["device"], 1),
        gres=gres_resource(LLAVA["merge"]["device"], 1),
    params:
        device=LLAVA["merge"]["device"],
        max_shard_size=LLAVA["adapter"]["max_shard_size"],
    script:
        "../scripts/llava_merge.py"


rule llava_evaluation_page:
    """The held-out accuracy as a report table, with some replies."""
    input:
        summary=paths.LLAVA_EVAL_SUMMARY,
        replies=paths.LLAVA_EVAL_REPLIES,
    output:
        html=report(paths.LLAVA_REPORT, caption="../report/llava.rst", category="LLaVA"),
    log:
        "logs/llava/evaluation_page.log",
    benchmark:
        "benchmarks/llava/evaluation_page.tsv"
    conda:
        XTFLOW_ENV
    script:
        "../scripts/llava_evaluation_page.py"


rule llava:
    """The LLaVA target: evaluation (and its report page) and the merged model."""
    input:
        rules.llava_evaluation_page.output,
        rules.llava_merge.output,
