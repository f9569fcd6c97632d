rule train:
    """Train with XTuner (python -m xtuner.tools.train); publish the final checkpoint as a stable handle."""
    input:
        config=XTUNER_CONFIG,
        data=DATASET,
        model=BASE_MODEL,
    output:
        checkpoint=checkpoint_output(),
    log:
        "logs/train.log",
    benchmark:
        "benchmarks/train.tsv"
    conda:
        XTFLOW_ENV
    threads: 4
    resources:
        gpu=gpu_resource(XT["device"], TRAIN["gpus"]),
        gpu_model=gpu_model_resource(XT["device"], TRAIN["gpus"]),
        gres=gres_resource(XT["device"], TRAIN["gpus"]),
    params:
        work_dir=WORK_DIR,
        deepspeed=TRAIN["deepspeed"],
        gpus=TRAIN["gpus"],
        warmup_ratio=XT["warmup_ratio"],
        identity_answers=verbatim(identity_answers()),
    script:
        "../scripts/train.py"
