# xtflow: fine-tune a chat model into a personal assistant with XTuner, reproducibly.
#
#   snakemake --cores 1                  # build results/final_model (the default target)
#   snakemake -n                         # dry run: what would run, and why
#   snakemake --configfile my.yaml ...   # your own settings (see config/config.yaml)
#
# Stages (one rule file each): dataset -> base_model -> xtuner_config -> train -> adapter -> merge,
# evaluate (results/eval/summary.csv: base vs final model), and the report
# (snakemake --cores 2 report_files && snakemake --report report.html report_files).

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/dataset.smk"
include: "workflow/rules/base_model.smk"
include: "workflow/rules/xtuner_config.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/export.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        "results/final_model",
    default_target: True
