"""The embedded default base model: a tiny Llama-style causal LM built on CPU.

No model hub is reachable from the machines xtflow is developed and tested on,
so the default run builds its own base model: a byte-level BPE tokenizer trained
on a fixed, shipped corpus (with the InternLM2 chat template's special tokens)
and a randomly initialised Llama model of a few hundred thousand parameters.
Everything is seeded, so the same settings give byte-identical files.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from xtflow.fsutil import atomic_dir

# The special tokens of InternLM2's chat template (xtuner's
# PROMPT_TEMPLATE.internlm2_chat) plus the usual BOS/EOS/UNK/PAD.
BOS, EOS, UNK, PAD = "<s>", "</s>", "<unk>", "<pad>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [UNK, BOS, EOS, PAD, IM_START, IM_END]

# ChatML-style template, the one InternLM2-chat ships, so that
# `tokenizer.apply_chat_template` works on the tiny model as on the real one.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class TinyModelSpec:
    """Shape of the tiny model; every field comes from config `base_model.tiny`."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    max_position_embeddings: int
    seed: int


def tokenizer_corpus() -> list[str]:
    """The fixed text the tokenizer is trained on (shipped with xtflow)."""
    path = Path(__file__).with_name("data") / "tokenizer_corpus.txt"
    return path.read_text(encoding="utf-8").splitlines()


def build_tokenizer(vocab_size: int, out_dir: Path) -> None:
    """Train a byte-level BPE on the shipped corpus; save it as a HF fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(tokenizer_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=PAD,
        additional_special_tokens=[IM_START, IM_END],
        chat_template=CHAT_TEMPLATE,
        model_max_length=None,
        model_input_names=["input_ids", "attention_mask"],  # a causal LM takes no token_type_ids
    )
    fast.save_pretrained(str(out_dir))


def build_model(spec: TinyModelSpec, n_vocab: int, eos_ids: list[int], ids: dict[str, int], out_dir: Path) -> None:
    """Create the randomly initialised Llama model (seeded) and save it as safetensors."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=n_vocab,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_heads,
        max_position_embeddings=spec.max_position_embeddings,
        bos_token_id=ids[BOS],
        eos_token_id=eos_ids,
        pad_token_id=ids[PAD],
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    torch.manual_seed(spec.seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=ids[BOS], eos_token_id=eos_ids, pad_token_id=ids[PAD])
    model.save_pretrained(str(out_dir), safe_serialization=True)


def build_tiny_model(spec: TinyModelSpec, out_dir: Path) -> None:
    """Write tokenizer + model into `out_dir` (atomically: all or nothing)."""
    from transformers import AutoTokenizer

    os.environ.setdefault("RAYON_NUM_THREADS", "1")  # deterministic BPE training
    with atomic_dir(out_dir) as tmp:
        build_tokenizer(spec.vocab_size, tmp)
        tokenizer = AutoTokenizer.from_pretrained(str(tmp))
        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
        build_model(spec, len(tokenizer), [ids[EOS], ids[IM_END]], ids, tmp)
        (tmp / "xtflow_tiny_model.json").write_text(
            json.dumps(spec.__dict__, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
