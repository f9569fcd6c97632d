rule train:
    """Train with XTuner (python -m xtuner.tools.train); publish the final checkpoint as a stable handle."""
    input:
        config=XTUNER_CONFIG,
        data=DATASET,
        model=BASE_MODEL,
    output:
        checkpoint=checkpoint_output(),
    threads: 4
    params:
        work_dir=WORK_DIR,
        deepspeed=TRAIN["deepspeed"],
        gpus=TRAIN["gpus"],
        warmup_ratio=XT["warmup_ratio"],
    resources:
        gpu=gpu_resource(XT["device"], TRAIN["gpus"]),
        gpu_model=gpu_model_resource(XT["device"], TRAIN["gpus"]),
        gres=gres_resource(XT["device"], TRAIN["gpus"]),
    log:
        "logs/train.log",
    benchmark:
        "benchmarks/train.tsv"
    script:
        "../scripts/train.py"
