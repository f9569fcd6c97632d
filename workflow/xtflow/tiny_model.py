"""The embedded default base model: a tiny causal LM built on CPU (Llama, or InternLM2's own architecture).

No model hub is reachable from the machines xtflow is developed and tested on,
so the default run builds its own base model: a byte-level BPE tokenizer trained
on a fixed, shipped corpus (with the InternLM2 chat template's special tokens)
and a randomly initialised model of a few hundred thousand parameters: a Llama
(the default), or with `architecture: internlm2` a model of internlm2-chat-1_8b's
own architecture, laid out as that model's directory is (see `internlm2_config`).
Everything is seeded, so the same settings give byte-identical files.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xtflow.fsutil import atomic_dir
from xtflow.xtuner_config import xtuner_package_dir

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
    architecture: str = "llama"  # or "internlm2"


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
    """Create the randomly initialised model (seeded) and save it as safetensors."""
    from transformers import GenerationConfig

    generation = GenerationConfig(bos_token_id=ids[BOS], eos_token_id=eos_ids, pad_token_id=ids[PAD])
    if spec.architecture == "internlm2":
        config = internlm2_config(
            vocab_size=n_vocab,
            hidden_size=spec.hidden_size,
            intermediate_size=spec.intermediate_size,
            num_layers=spec.num_layers,
            num_heads=spec.num_heads,
            max_position_embeddings=spec.max_position_embeddings,
            ids=ids,
        )
        save_internlm2(config, generation, spec.seed, out_dir)
        return
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

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
    model.generation_config = generation
    model.save_pretrained(str(out_dir), safe_serialization=True)


# InternLM2's model code, as internlm2-chat-1_8b ships it beside its weights (remote code, loaded with
# trust_remote_code=True); XTuner 0.2.0 carries the same two files.
INTERNLM2_CODE = ("configuration_internlm2.py", "modeling_internlm2.py")


def internlm2_code_dir() -> Path:
    return xtuner_package_dir() / "_lite" / "modelings" / "internlm2"


def internlm2_config(
    vocab_size: int,
    hidden_size: int,
    intermediate_size: int,
    num_layers: int,
    num_heads: int,
    max_position_embeddings: int,
    ids: dict[str, int],
) -> dict[str, Any]:
    """config.json of a model of InternLM2's architecture, as internlm2-chat-1_8b's: its remote code
    (auto_map), grouped-query attention with half as many key-value heads as heads (16 / 8 there),
    RoPE theta 1e6 with dynamic NTK scaling x2, no biases, bfloat16, and its `attn_implementation:
    eager` (which transformers 4.48 ignores on loading: the model runs what from_pretrained is asked for)."""
    return {
        "architectures": ["InternLM2ForCausalLM"],
        "auto_map": {
            "AutoConfig": "configuration_internlm2.InternLM2Config",
            "AutoModel": "modeling_internlm2.InternLM2ForCausalLM",
            "AutoModelForCausalLM": "modeling_internlm2.InternLM2ForCausalLM",
        },
        "model_type": "internlm2",
        "attn_implementation": "eager",
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_heads // 2,
        "max_position_embeddings": max_position_embeddings,
        "rope_theta": 1000000,
        "rope_scaling": {"type": "dynamic", "factor": 2.0},
        "bias": False,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "initializer_range": 0.02,
        "tie_word_embeddings": False,
        "use_cache": True,
        "bos_token_id": ids[BOS],
        "eos_token_id": ids[EOS],
        "pad_token_id": ids[PAD],
        "torch_dtype": "bfloat16",
    }


def save_internlm2(config: dict[str, Any], generation: Any, seed: int, out_dir: Path, device: str = "cpu") -> None:
    """Build a randomly initialised (seeded) InternLM2 model from `config` through transformers' remote-code
    path, as from_pretrained loads the real one, and save it in bfloat16 with its code files and auto_map."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with tempfile.TemporaryDirectory() as tmp:
        # the directory's name is the dynamic module's (transformers_modules.internlm2): a plain identifier
        code = Path(tmp) / "internlm2"
        code.mkdir()
        for name in INTERNLM2_CODE:
            shutil.copy2(internlm2_code_dir() / name, code / name)
        (code / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        model_config = AutoConfig.from_pretrained(code, trust_remote_code=True)
        torch.manual_seed(seed)
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(model_config, trust_remote_code=True)
    model = model.to(torch.bfloat16)
    model.config.torch_dtype = torch.bfloat16
    model.config._name_or_path = ""  # not the temporary build directory (config.json stays byte-identical)
    model.generation_config = generation
    # the class comes from a dynamic module: save_pretrained also writes its two code files (auto_map kept)
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
