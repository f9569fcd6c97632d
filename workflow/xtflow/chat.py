"""Talk to a run's models with the run's own prompt template and system prompt.

    python -m xtflow.chat                      # interactive, results/final_model
    python -m xtflow.chat --model base         # the base model, for comparison
    python -m xtflow.chat --model adapter      # base + results/hf_adapter (before merging)
    python -m xtflow.chat -q "Who are you?"    # one-shot: answer on stdout, exit 0
    python -m xtflow.chat --image cat.png      # the LLaVA target's fine-tuned model, about an image
    python -m xtflow.chat --model llava_merged --image cat.png -q "What colour is the cat?"

Interactive use follows `xtuner chat`: an empty line sends what you typed (so a
message may span lines), RESET clears the history, EXIT quits. With an image, it goes
before the first question, as in `xtuner chat --llava ... --image`.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from xtflow.chat_model import MODELS, ChatModel, RunSettings, Sampling, model_paths
from xtflow.errors import XtflowError
from xtflow.llava_model import LLAVA_MODELS, LlavaChatModel, load_image


def read_message(
    prompt: str = "\ndouble enter to end input (EXIT: exit chat, RESET: reset history) >>> ",
) -> str | None:
    """Lines until an empty line (as `xtuner chat`); None at end of input."""
    print(prompt, end="", flush=True)
    lines: list[str] = []
    while True:
        line = sys.stdin.readline()
        if line == "":
            return "\n".join(lines) if lines else None
        line = line.rstrip("\n")
        if line == "" and lines:
            return "\n".join(lines)
        if line != "":
            lines.append(line)


def interactive(chat: ChatModel, sampling: Sampling) -> None:
    history: list[tuple[str, str]] = []
    while True:
        text = read_message()
        if text is None or text.strip() == "EXIT":
            print("Log: Exit!")
            return
        if text.strip() == "RESET":
            history.clear()
            print("Log: History responses have been removed!")
            continue
        answer = ""
        try:
            for piece in chat.stream(history, text, sampling):
                answer += piece
                print(piece, end="", flush=True)
        except XtflowError as e:  # this message is refused; the chat goes on
            print(f"\nxtflow: error: {e}", file=sys.stderr, flush=True)
            continue
        print()
        history.append((text, answer.strip()))


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line (`xtflow: error: argument --top-p: ...`), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"xtflow: error: {message} (see --help)\n")


def bounded(kind: type, low: float | None = None, high: float | None = None, low_open: bool = False) -> Callable:
    """An argparse type: a number of `kind` within [low, high] ((low, high] with low_open)."""

    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}") from None
        if not math.isfinite(value) or (low is not None and (value <= low if low_open else value < low)):
            raise argparse.ArgumentTypeError(f"must be {'above' if low_open else 'at least'} {low}, got {text}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high}, got {text}")
        return value

    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = OneLineParser(
        prog="python -m xtflow.chat", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--model",
        choices=[*MODELS, *LLAVA_MODELS],
        help="which model to talk to (default: final; with --image: llava, the LLaVA target's fine-tuned model)",
    )
    p.add_argument("--image", type=Path, help="an image to talk about (a LLaVA model)")
    p.add_argument("-q", "--question", help="one-shot: print the answer to this question and exit")
    p.add_argument("--workdir", type=Path, default=Path("."), help="the run's directory (default: .)")
    p.add_argument("--config", type=Path, help="the run's config (default: WORKDIR/config/config.yaml)")
    p.add_argument("--temperature", type=bounded(float, 0), default=0.0, help="0: greedy (default)")
    p.add_argument("--top-p", type=bounded(float, 0, 1, low_open=True), default=0.8)
    p.add_argument("--top-k", type=bounded(int, 0), default=40, help="0: no top-k cut")
    p.add_argument("--max-new-tokens", type=bounded(int, 1), default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = args.config or args.workdir / "config" / "config.yaml"
    which = args.model or ("llava" if args.image else "final")
    try:
        if args.image is not None and which not in LLAVA_MODELS:
            raise XtflowError(f"--image needs a LLaVA model (--model {' or '.join(LLAVA_MODELS)}), not '{which}'")
        if which in LLAVA_MODELS:
            image = load_image(args.image) if args.image is not None else None  # refused before loading the model
            chat: ChatModel = LlavaChatModel.load(which, args.workdir, config, args.device).with_image(image)
        else:
            model_dir, adapter_dir = model_paths(which, args.workdir)
            chat = ChatModel(model_dir, RunSettings.from_config(config), adapter_dir, args.device)
    except XtflowError as e:
        print(f"xtflow: error: {e}", file=sys.stderr)
        return 1
    sampling = Sampling(args.temperature, args.top_p, args.top_k, args.max_new_tokens, args.seed)
    if args.question is not None:
        try:
            print(chat.reply([], args.question, sampling))
        except XtflowError as e:
            print(f"xtflow: error: {e}", file=sys.stderr)
            return 1
        return 0
    interactive(chat, sampling)
    return 0


if __name__ == "__main__":
    sys.exit(main())
