if HUB_MODEL:

    rule download_model:
        """Fetch the base model from the Hugging Face Hub into the client's cache (resumable; a cached
        model needs no network) and link its snapshot as resources/base_model."""
        output:
            model=directory(BASE_MODEL),
        log:
            "logs/download_model.log",
        benchmark:
            "benchmarks/download_model.tsv"
        # on a cluster, where Snakemake itself runs (a login node has the network; compute nodes may not)
        localrule: True
        conda:
            XTFLOW_ENV
        params:
            path=config["base_model"]["path"],
            revision=config["base_model"]["revision"],
        script:
            "../scripts/download_model.py"

else:

    rule base_model:
        """Link the local base model (checked) into resources/, or build the tiny embedded default
        (random weights; then taught the general set by rule general_skill unless that is off)."""
        output:
            model=directory(BASE_MODEL if config["base_model"]["path"] or not SKILL else UNTAUGHT_MODEL),
        log:
            "logs/base_model.log",
        benchmark:
            "benchmarks/base_model.tsv"
        conda:
            XTFLOW_ENV
        params:
            path=config["base_model"]["path"],
            tiny=config["base_model"]["tiny"],
        script:
            "../scripts/base_model.py"


if SKILL and not config["base_model"]["path"]:

    rule general_skill:
        """Teach the tiny default a small general Q&A set, so fine-tuning has something to lose."""
        input:
            model=UNTAUGHT_MODEL,
        output:
            model=directory(BASE_MODEL),
        log:
            "logs/general_skill.log",
        benchmark:
            "benchmarks/general_skill.tsv"
        conda:
            XTFLOW_ENV
        params:
            skill=SKILL,
            prompt_template=XT["prompt_template"],
        script:
            "../scripts/general_skill.py"
