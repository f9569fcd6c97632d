"""Start the web demo on a run's outputs.

    python -m xtflow.web                      # http://127.0.0.1:8501, the final model
    python -m xtflow.web --model base         # start on the base model (switchable in the sidebar)
    python -m xtflow.web --model llava        # the LLaVA target's model: upload an image, ask about it
    python -m xtflow.web --address 0.0.0.0    # listen beyond this machine: only when asked for

It binds 127.0.0.1 unless another address is given explicitly.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from xtflow.chat_model import MODELS, RunSettings, model_paths
from xtflow.errors import XtflowError
from xtflow.llava_model import llava_export


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m xtflow.web", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", choices=[m for m in MODELS if m != "adapter"] + ["llava"], default="final")
    p.add_argument("--workdir", type=Path, default=Path("."))
    p.add_argument("--config", type=Path, help="the run's config (default: WORKDIR/config/config.yaml)")
    p.add_argument("--address", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8501)
    args = p.parse_args(argv)
    config = args.config or args.workdir / "config" / "config.yaml"
    try:
        RunSettings.from_config(config)
        if args.model == "llava":
            llava_export(args.model, args.workdir)
        else:
            model_paths(args.model, args.workdir)
    except XtflowError as e:
        print(f"xtflow: error: {e}", file=sys.stderr)
        return 1
    app = Path(__file__).with_name("webdemo.py")
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(app),
        "--server.address",
        args.address,
        "--server.port",
        str(args.port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
        "--",
        "--workdir",
        str(args.workdir.resolve()),
        "--config",
        str(config.resolve()),
        "--model",
        args.model,
    ]
    print(f"xtflow: serving the {args.model} model on http://{args.address}:{args.port}", file=sys.stderr, flush=True)
    os.execv(sys.executable, cmd)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
