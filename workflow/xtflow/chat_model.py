"""A run's chat model: loaded once, prompted exactly as XTuner trained it (the run's prompt template
and system prompt), generating greedily or by sampling, streamed or in batches.

Used by the chat command (`xtflow.chat`), the web demo, the evaluation and the general-skill stage.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xtflow import paths
from xtflow.errors import XtflowError

MODELS = {"final": paths.FINAL_MODEL, "base": paths.BASE_MODEL, "adapter": paths.ADAPTER}


@dataclass(frozen=True)
class Sampling:
    """Generation settings; temperature 0 means greedy."""

    temperature: float = 0.0
    top_p: float = 0.8
    top_k: int = 40
    max_new_tokens: int = 128
    seed: int = 0
    repetition_penalty: float = 1.0


@dataclass(frozen=True)
class RunSettings:
    """What a chat needs from the run's config: the prompt template and system prompt used in training."""

    prompt_template: str
    system: str

    @classmethod
    def from_config(cls, path: Path) -> RunSettings:
        cfg = run_config(path)
        return cls(prompt_template=cfg["xtuner"]["prompt_template"], system=cfg["xtuner"]["system"])


def run_config(path: Path) -> dict[str, Any]:
    """The run's config, validated, defaults filled in."""
    from xtflow.settings import load_config_file, validate

    if not path.is_file():
        raise XtflowError(f"{path}: no config file here (run from the workflow's directory or pass --config)")
    return validate(load_config_file(path))


def model_paths(which: str, workdir: Path) -> tuple[Path, Path | None]:
    """(model dir, adapter dir or None) for final/base/adapter; refuses what is not built yet."""
    if which not in MODELS:
        raise XtflowError(f"unknown model '{which}' (choose from {', '.join(MODELS)})")
    # what marks each directory as built: a model's config.json, an adapter's adapter_config.json
    needed = {
        "final": [(MODELS["final"], "config.json")],
        "base": [(MODELS["base"], "config.json")],
        "adapter": [(MODELS["base"], "config.json"), (MODELS["adapter"], "adapter_config.json")],
    }[which]
    for rel, marker in needed:
        if not (workdir / rel / marker).is_file():
            raise XtflowError(f"{rel} does not exist yet: run `snakemake --cores 1 {rel}` first")
    if which == "adapter":
        return workdir / MODELS["base"], workdir / MODELS["adapter"]
    return workdir / MODELS[which], None


def render_prompt(template: dict, system: str, history: list[tuple[str, str]], question: str) -> str:
    """The prompt XTuner trains on for a conversation: `template` is a `xtuner.utils.PROMPT_TEMPLATE` entry."""
    text = template["SYSTEM"].format(system=system) if system and "SYSTEM" in template else ""
    for i, (q, a) in enumerate([*history, (question, None)]):
        text += template["INSTRUCTION"].format(input=q, round=i + 1, bot_name="")
        if a is not None:
            text += a + template.get("SUFFIX", "") + template.get("SEP", "")
    return text


def chat_template_jinja(template: dict, bos_token: str | None) -> str:
    """A Jinja chat template (`tokenizer.chat_template`) that renders exactly what `render_prompt` does,
    with the BOS token in front (as `ChatModel.token_ids` adds it). XTuner's instruction already ends
    with the assistant's header, so the template is ready for the reply after each user message."""
    import json
    import string

    def expr(fmt: str, fields: dict[str, str]) -> str:
        out = ""
        for literal, name, _, _ in string.Formatter().parse(fmt):
            out += f"{{{{ {json.dumps(literal)} }}}}" if literal else ""
            out += f"{{{{ {fields[name]} }}}}" if name is not None else ""
        return out

    content = "message['content']"
    system = expr(template["SYSTEM"], {"system": content}) if "SYSTEM" in template else ""
    instruction = expr(template["INSTRUCTION"], {"input": content, "round": "ns.round", "bot_name": "''"})
    after_reply = expr(template.get("SUFFIX", "") + template.get("SEP", ""), {})
    return (
        ("{{ bos_token }}" if bos_token else "")
        + "{% set ns = namespace(round=0) %}{% for message in messages %}"
        + "{% if message['role'] == 'system' %}"
        + (f"{{% if message['content'] %}}{system}{{% endif %}}" if system else "")
        + "{% elif message['role'] == 'user' %}{% set ns.round = ns.round + 1 %}"
        + instruction
        + "{% elif message['role'] == 'assistant' %}{{ message['content'] }}"
        + after_reply
        + "{% endif %}{% endfor %}"
    )


def stop_token_ids(tokenizer: Any, template: dict, eos_token_id: int | list[int] | None) -> list[int]:
    """The tokens that end a reply: the model's EOS tokens, the tokenizer's, and the prompt template's
    stop words that are single tokens (for internlm2_chat: `<|im_end|>`)."""
    eos = list(eos_token_id) if isinstance(eos_token_id, (list, tuple)) else [eos_token_id]
    stop = [
        ids[0] for s in template.get("STOP_WORDS", []) if len(ids := tokenizer.encode(s, add_special_tokens=False)) == 1
    ]
    return sorted({i for i in [*eos, *stop, tokenizer.eos_token_id] if i is not None})


@dataclass
class ChatModel:
    """A causal LM plus the run's prompt template, loaded once; builds prompts exactly as XTuner trained them."""

    model_dir: Path
    settings: RunSettings
    adapter_dir: Path | None = None
    device: str = "auto"
    model: Any = field(init=False)
    tokenizer: Any = field(init=False)
    template: dict = field(init=False)
    context: int | None = field(init=False)

    def __post_init__(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from xtuner.utils import PROMPT_TEMPLATE

        if self.device == "auto":
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.template = dict(PROMPT_TEMPLATE[self.settings.prompt_template])
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir, trust_remote_code=True)
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        model = AutoModelForCausalLM.from_pretrained(self.model_dir, torch_dtype=dtype, trust_remote_code=True)
        if self.adapter_dir is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, self.adapter_dir)
        self.model = model.to(self.device).eval()
        # positions the model was built for: a longer prompt gives garbage (and takes minutes)
        self.context = getattr(model.config, "max_position_embeddings", None)
        print(
            f"xtflow: loaded model {self.model_dir}" + (f" + {self.adapter_dir}" if self.adapter_dir else ""),
            file=sys.stderr,
            flush=True,
        )

    # -- prompts -------------------------------------------------------------------
    def prompt(self, history: list[tuple[str, str]], question: str) -> str:
        return render_prompt(self.template, self.settings.system, history, question)

    def token_ids(self, text: str) -> list[int]:
        bos = [self.tokenizer.bos_token_id] if self.tokenizer.bos_token_id is not None else []
        return bos + self.tokenizer.encode(text, add_special_tokens=False)

    def generation_inputs(self, history: list[tuple[str, str]], question: str) -> dict[str, Any]:
        """What `generate` gets for this prompt: token ids and their attention mask."""
        import torch

        ids = torch.tensor([self.token_ids(self.prompt(history, question))], device=self.device)
        return dict(input_ids=ids, attention_mask=torch.ones_like(ids))

    def generate_kwargs(self, sampling: Sampling) -> dict[str, Any]:
        kwargs: dict[str, Any] = dict(
            max_new_tokens=sampling.max_new_tokens,
            eos_token_id=stop_token_ids(self.tokenizer, self.template, self.model.generation_config.eos_token_id),
            pad_token_id=self.tokenizer.pad_token_id
            if self.tokenizer.pad_token_id is not None
            else self.tokenizer.eos_token_id,
            repetition_penalty=sampling.repetition_penalty,
        )
        if sampling.temperature > 0:
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kwargs

    def _visible(self, text: str) -> str:
        """The text before the first stop word."""
        for stop in self.template.get("STOP_WORDS", []):
            text = text.split(stop)[0]
        return text

    def clean(self, text: str) -> str:
        return self._visible(text).strip()

    # -- generation ----------------------------------------------------------------
    def reply(self, history: list[tuple[str, str]], question: str, sampling: Sampling = Sampling()) -> str:
        return "".join(self.stream(history, question, sampling)).strip()

    def check_fits(self, prompt_tokens: int, max_new_tokens: int) -> None:
        """Refuse a prompt that, with the reply, would not fit in the model's context."""
        if self.context is not None and prompt_tokens + max_new_tokens > self.context:
            raise XtflowError(
                f"the prompt is {prompt_tokens} tokens (with the history and the template); with "
                f"{max_new_tokens} new tokens that exceeds the model's context of {self.context} tokens: "
                "shorten the message, clear the history (RESET) or ask for fewer new tokens"
            )

    def stream(self, history: list[tuple[str, str]], question: str, sampling: Sampling = Sampling()) -> Iterator[str]:
        """Yield the reply piece by piece as it is generated. A prompt too long for the model, or any
        error while generating (it runs in a thread), raises XtflowError here."""
        import torch
        from transformers import TextIteratorStreamer

        torch.manual_seed(sampling.seed)
        inputs = self.generation_inputs(history, question)
        self.check_fits(inputs["attention_mask"].shape[1], sampling.max_new_tokens)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        kwargs = dict(**inputs, streamer=streamer, **self.generate_kwargs(sampling))
        failed: list[BaseException] = []

        def generate() -> None:
            try:
                self._generate_quietly(**kwargs)
            except BaseException as e:  # reported in the caller's thread; the streamer must end either way
                failed.append(e)
                streamer.end()

        worker = threading.Thread(target=generate, daemon=True)
        worker.start()
        text, shown = "", 0
        for piece in streamer:
            text += piece
            visible = self._visible(text)
            if len(visible) > shown:
                yield visible[shown:]
                shown = len(visible)
            if visible != text:  # a stop word appeared
                break
        worker.join()
        if failed:
            e = failed[0]
            line = str(e).splitlines()[0] if str(e) else ""
            raise XtflowError(f"generation failed: {type(e).__name__}: {line}") from None

    def _generate_quietly(self, **kwargs: Any) -> None:
        import torch

        with torch.no_grad():
            self.model.generate(**kwargs)

    def reply_batch(
        self,
        questions: list[str],
        max_new_tokens: int,
        batch_size: int = 16,
        histories: list[list[tuple[str, str]]] | None = None,
    ) -> list[str]:
        """Greedy replies to many questions, batched (left padding); question i is asked after the
        (question, reply) turns of `histories[i]` (none: a first turn)."""
        import torch

        sampling = Sampling(temperature=0.0, max_new_tokens=max_new_tokens)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        prompts = [self.token_ids(self.prompt(h, q)) for h, q in zip(histories or [[]] * len(questions), questions)]
        out: list[str] = []
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start : start + batch_size]
            width = max(map(len, batch))
            ids = torch.tensor([[pad] * (width - len(b)) + b for b in batch], device=self.device)
            mask = torch.tensor([[0] * (width - len(b)) + [1] * len(b) for b in batch], device=self.device)
            with torch.no_grad():
                gen = self.model.generate(input_ids=ids, attention_mask=mask, **self.generate_kwargs(sampling))
            for row in gen[:, width:]:
                out.append(self.clean(self.tokenizer.decode(row, skip_special_tokens=True)))
        return out
