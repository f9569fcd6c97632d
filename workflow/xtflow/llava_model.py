"""A LLaVA model of the run, loaded as `xtuner chat LLM --visual-encoder CLIP --llava DIR` loads it, and
prompted as XTuner trained it: the chat model of the text pipeline (`xtflow.chat_model.ChatModel`) with
an image before the first question.

DIR is an export in XTuner's LLaVA layout: `projector/` always; `llm_adapter/` and
`visual_encoder_adapter/` (LoRA) after fine-tuning; `llm/` and `visual_encoder/` in a merged folder.
What DIR lacks comes from the run's LLM and visual encoder. The image is padded to a square with the
processor's mean colour (as XTuner's chat and fine-tuning data do), encoded by the visual encoder (its
second-to-last layer, patch tokens only) and projected into the LLM's embeddings, where the prompt's
`<image>` stands.

Used by the chat command (`--image`), the web demo (an uploaded image) and the evaluation (batched).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xtflow import paths
from xtflow.chat_model import ChatModel, RunSettings, Sampling, run_config
from xtflow.errors import XtflowError

IMAGE_TOKEN = "<image>"  # xtuner.utils.DEFAULT_IMAGE_TOKEN
IMAGE_TOKEN_INDEX = -200  # xtuner.utils.IMAGE_TOKEN_INDEX: where prepare_inputs_labels_for_multimodal puts the image
VISUAL_SELECT_LAYER = -2  # LLaVAModel's and xtuner chat's default
LLAVA_MODELS = {
    "llava": paths.llava_export("finetune"),  # fine-tuned: projector + LoRA of LLM and visual encoder
    "llava_projector": paths.llava_export("pretrain"),  # after pretraining: the projector alone
    "llava_merged": paths.LLAVA_MERGED,  # the fine-tuned model with its adapters merged
}


@dataclass(frozen=True)
class LlavaRun:
    """What a LLaVA chat needs from the run's config: the prompt template, the LLM and the visual encoder."""

    settings: RunSettings
    llm: Path
    visual_encoder: Path

    @classmethod
    def from_config(cls, path: Path, workdir: Path) -> LlavaRun:
        llava = run_config(path)["llava"]
        return cls(
            RunSettings(prompt_template=llava["prompt_template"], system=""),
            workdir / paths.llava_llm(llava),
            workdir / paths.llava_visual_encoder(llava),
        )


def llava_export(which: str, workdir: Path) -> Path:
    """The export directory of `which` (a key of LLAVA_MODELS); refuses one not built yet."""
    if which not in LLAVA_MODELS:
        raise XtflowError(f"unknown LLaVA model '{which}' (choose from {', '.join(LLAVA_MODELS)})")
    rel = LLAVA_MODELS[which]
    if not (workdir / rel / "projector" / "config.json").is_file():
        raise XtflowError(f"{rel} does not exist yet: run `snakemake --cores 2 llava` first")
    return workdir / rel


def load_image(source: Path | Any) -> Any:
    """An image file (a path or an open binary file) as RGB; one line naming it if it does not decode."""
    from PIL import Image

    try:
        with Image.open(source) as img:
            return img.convert("RGB")
    except (OSError, ValueError) as e:
        raise XtflowError(f"{getattr(source, 'name', source)}: not an image this model can read ({e})") from None


@dataclass
class LlavaChatModel(ChatModel):
    """A ChatModel whose LLM sees an image: `with_image` gives one that asks about it (see the module's docstring)."""

    export_dir: Path | None = None
    visual_encoder_dir: Path | None = None
    visual_encoder: Any = field(init=False)
    projector: Any = field(init=False)
    image_processor: Any = field(init=False)
    image: Any = field(init=False, default=None)  # the current image's projected features (1, tokens, hidden)

    @classmethod
    def load(cls, which: str, workdir: Path, config: Path, device: str = "auto") -> LlavaChatModel:
        """The run's LLaVA model `which` (a key of LLAVA_MODELS)."""
        return cls.from_export(llava_export(which, workdir), LlavaRun.from_config(config, workdir), device)

    @classmethod
    def from_export(cls, export: Path, run: LlavaRun, device: str = "auto") -> LlavaChatModel:
        """The model of an export directory; what it lacks comes from the run's LLM and visual encoder."""
        merged_llm, adapter, merged_encoder = export / "llm", export / "llm_adapter", export / "visual_encoder"
        return cls(
            model_dir=merged_llm if merged_llm.is_dir() else run.llm,
            settings=run.settings,
            adapter_dir=adapter if adapter.is_dir() else None,
            device=device,
            export_dir=export,
            visual_encoder_dir=merged_encoder if merged_encoder.is_dir() else run.visual_encoder,
        )

    def __post_init__(self) -> None:
        super().__post_init__()  # tokenizer, LLM (+ LLM adapter)
        import xtuner.model  # noqa: F401 (registers the projector's model type with transformers)
        from transformers import AutoModel, CLIPImageProcessor, CLIPVisionModel

        from xtflow.remote_code import generate_from_embeddings

        generate_from_embeddings(self.model)  # the image's features reach the LLM as embeddings

        dtype = next(self.model.parameters()).dtype
        encoder = CLIPVisionModel.from_pretrained(self.visual_encoder_dir, torch_dtype=dtype)
        adapter = self.export_dir / "visual_encoder_adapter"
        if adapter.is_dir():
            from peft import PeftModel

            encoder = PeftModel.from_pretrained(encoder, adapter)
        self.visual_encoder = encoder.to(self.device).eval()
        self.image_processor = CLIPImageProcessor.from_pretrained(self.visual_encoder_dir)
        projector = AutoModel.from_pretrained(self.export_dir / "projector", torch_dtype=dtype, trust_remote_code=True)
        self.projector = projector.to(self.device).eval()

    # -- images --------------------------------------------------------------------
    def image_features(self, images: list[Any]) -> Any:
        """Projected features (batch, image tokens, LLM hidden size) of PIL images, as XTuner computes them."""
        import torch
        from xtuner.dataset.utils import expand2square

        background = tuple(int(x * 255) for x in self.image_processor.image_mean)
        squares = [expand2square(img, background) for img in images]
        pixels = self.image_processor.preprocess(squares, return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            hidden = self.visual_encoder(
                pixels.to(self.device, dtype=self.projector.dtype), output_hidden_states=True
            ).hidden_states
            return self.projector(hidden[VISUAL_SELECT_LAYER][:, 1:])

    def with_image(self, image: Any | None) -> LlavaChatModel:
        """This model, chatting about `image` (a PIL image; None: text only), which goes before the first
        question. A shallow copy: the loaded models are shared (the web demo serves one to every session)."""
        chat = copy.copy(self)
        chat.image = None if image is None else self.image_features([image])
        return chat

    # -- prompts -------------------------------------------------------------------
    def prompt(self, history: list[tuple[str, str]], question: str) -> str:
        if self.image is None:
            return super().prompt(history, question)
        if history:
            history = [(f"{IMAGE_TOKEN}\n{history[0][0]}", history[0][1]), *history[1:]]
        else:
            question = f"{IMAGE_TOKEN}\n{question}"
        return super().prompt(history, question)

    def generation_inputs(self, history: list[tuple[str, str]], question: str) -> dict[str, Any]:
        if self.image is None:
            return super().generation_inputs(history, question)
        return self.embedded(self.prompt(history, question), self.image)

    def embedded(self, prompt: str, features: Any) -> dict[str, Any]:
        """`inputs_embeds` and attention mask of a prompt holding one `<image>`, the image's features in its place."""
        import torch
        from xtuner.model.utils import prepare_inputs_labels_for_multimodal

        before, after = prompt.split(IMAGE_TOKEN)
        ids = self.token_ids(before) + [IMAGE_TOKEN_INDEX] + self.tokenizer.encode(after, add_special_tokens=False)
        with torch.no_grad():
            mm = prepare_inputs_labels_for_multimodal(
                llm=self.model, input_ids=torch.tensor([ids], device=self.device), pixel_values=features
            )
        embeds = mm["inputs_embeds"]
        return dict(
            inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long, device=self.device)
        )

    # -- generation ----------------------------------------------------------------
    def answer_images(self, items: list[tuple[str, Any]], max_new_tokens: int, batch_size: int = 32) -> list[str]:
        """Greedy single-turn replies to (question, PIL image) pairs, batched (left padding)."""
        import torch

        kwargs = self.generate_kwargs(Sampling(temperature=0.0, max_new_tokens=max_new_tokens))
        replies: list[str] = []
        for start in range(0, len(items), batch_size):
            batch = items[start : start + batch_size]
            features = self.image_features([image for _, image in batch])
            embeds = [
                self.embedded(ChatModel.prompt(self, [], f"{IMAGE_TOKEN}\n{q}"), features[i : i + 1])
                for i, (q, _) in enumerate(batch)
            ]
            width = max(e["inputs_embeds"].shape[1] for e in embeds)
            pad = [width - e["inputs_embeds"].shape[1] for e in embeds]
            inputs = torch.cat([torch.nn.functional.pad(e["inputs_embeds"], (0, 0, n, 0)) for e, n in zip(embeds, pad)])
            mask = torch.cat([torch.nn.functional.pad(e["attention_mask"], (n, 0)) for e, n in zip(embeds, pad)])
            with torch.no_grad():
                out = self.model.generate(inputs_embeds=inputs, attention_mask=mask, **kwargs)
            replies += [self.clean(self.tokenizer.decode(row, skip_special_tokens=True)) for row in out]
        return replies
