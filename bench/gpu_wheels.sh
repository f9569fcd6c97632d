#!/usr/bin/env bash
# Build .gpu/snakemake-wheels.tar on the CPU machine: Python 3.12 wheels of Snakemake and the
# packages the workflow needs beyond .gpu/site.tar.xz and the GPU machine's own (torch, transformers,
# pandas, ...), at the versions pinned in envs/requirements.txt. `bash bench/gpu_session.sh workflow`
# installs them on the GPU machine (no network there). Carry the file with the `device` tool.
set -euo pipefail
cd "$(dirname "$0")/.."
PKGS="snakemake snakemake_interface_common snakemake_interface_executor_plugins
snakemake_interface_logger_plugins snakemake_interface_report_plugins
snakemake_interface_scheduler_plugins snakemake_interface_storage_plugins argparse_dataclass
certifi charset_normalizer conda_inject configargparse connection_pool docutils dpath
fastjsonschema gitdb gitpython greenlet humanfriendly idna immutables jinja2 jupyter_core markupsafe
nbformat packaging psutil pulp requests smart_open smmap sqlalchemy sqlmodel tabulate tenacity
throttler traitlets typing_extensions urllib3 wrapt yte rapidfuzz"
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
mkdir "$W/smkw"
for p in $PKGS; do
  pin=$(grep -iE "^${p//_/[-_.]}==" envs/requirements.txt | head -1)
  [ -n "$pin" ] || { echo "gpu_wheels: $p is not pinned in envs/requirements.txt" >&2; exit 1; }
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_5_x86_64 --platform manylinux2010_x86_64 \
    -d "$W/smkw" "${pin%% *}" 2>/dev/null ||
    python3 -m pip wheel -q --no-deps -w "$W/smkw" "${pin%% *}"  # pure-Python sdist (connection_pool)
done
mkdir -p .gpu
tar -cf .gpu/snakemake-wheels.tar.part -C "$W" smkw && mv .gpu/snakemake-wheels.tar.part .gpu/snakemake-wheels.tar
echo "gpu_wheels: $(ls "$W/smkw" | wc -l) wheels -> .gpu/snakemake-wheels.tar"
