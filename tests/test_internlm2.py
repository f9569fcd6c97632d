"""InternLM2's own architecture (internlm2-chat-1_8b is `InternLM2ForCausalLM`, remote code): the tiny
InternLM2 base model, the attention and RoPE XTuner trains it with, where LoRA goes, and the whole workflow
on it (train, adapter, merge in the base's dtype, evaluate, chat)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import set_key
from xtflow.tiny_model import INTERNLM2_CODE, TinyModelSpec, build_tiny_model, internlm2_code_dir

SPEC = TinyModelSpec(
    vocab_size=400,
    hidden_size=32,
    intermediate_size=64,
    num_layers=2,
    num_heads=4,
    max_position_embeddings=64,
    seed=0,
    architecture="internlm2",
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("internlm2") / "model"
    build_tiny_model(SPEC, out)
    return out


def test_tiny_internlm2_is_laid_out_like_internlm2_chat(tiny: Path, tmp_path: Path) -> None:
    """Its code files beside bf16 weights, auto_map, grouped-query attention, dynamic NTK RoPE, the chat
    model's two stop tokens; loaded through transformers' remote-code path; seeded (byte-identical)."""
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    config = json.loads((tiny / "config.json").read_text(encoding="utf-8"))
    assert config["architectures"] == ["InternLM2ForCausalLM"] and config["model_type"] == "internlm2"
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_internlm2.InternLM2ForCausalLM"
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (4, 2)
    assert config["rope_scaling"] == {"type": "dynamic", "factor": 2.0} and config["torch_dtype"] == "bfloat16"
    for name in INTERNLM2_CODE:
        assert (tiny / name).read_bytes() == (internlm2_code_dir() / name).read_bytes()
    with safe_open(tiny / "model.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    assert len(json.loads((tiny / "generation_config.json").read_text())["eos_token_id"]) == 2
    model = AutoModelForCausalLM.from_pretrained(tiny, trust_remote_code=True, torch_dtype="auto")
    assert type(model).__name__ == "InternLM2ForCausalLM" and model.dtype == torch.bfloat16
    assert type(model).__module__.startswith("transformers_modules.")
    again = tmp_path / "again"
    build_tiny_model(SPEC, again)
    assert sorted(p.name for p in again.iterdir()) == sorted(p.name for p in tiny.iterdir())
    assert all((again / p.name).read_bytes() == p.read_bytes() for p in tiny.iterdir())


def lora_model(cls: type, model_dir: Path, targets: object = None):  # noqa: ANN205
    """XTuner's model class built as a written config builds it (fp32 on the CPU, LoRA r 4), seeded."""
    import torch
    from mmengine.config import ConfigDict
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM

    from xtflow.xtuner_tools import apply_cpu_shim

    apply_cpu_shim()
    torch.manual_seed(0)
    llm = dict(
        type=AutoModelForCausalLM.from_pretrained,
        pretrained_model_name_or_path=str(model_dir),
        torch_dtype=torch.float32,
        trust_remote_code=True,
    )
    lora = dict(type=LoraConfig, r=4, lora_alpha=8, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
    model = cls(llm=ConfigDict(llm), lora=ConfigDict(lora, target_modules=targets), use_activation_checkpointing=False)
    return model.train()


def padded_batch():  # noqa: ANN201
    """Two rows, the second right-padded, as XTuner's default_collate_fn builds them."""
    import torch

    ids = torch.randint(10, 400, (2, 24), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[1, 17:] = False
    labels = ids.masked_fill(~mask, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def loss_and_grads(model, data):  # noqa: ANN001, ANN201
    loss = model(dict(data), mode="loss")["loss"]
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_training_runs_sdpa_with_xtuners_loss(tiny: Path) -> None:
    """XTuner leaves InternLM2 on eager attention (flash-attn absent); xtflow's model class asks for SDPA:
    the same loss and gradients, without the stored [batch, heads, T, T] scores."""
    import torch
    from xtuner.model import SupervisedFinetune

    from xtflow.xtuner_plugins import FastLoraSupervisedFinetune

    stock, fast = (lora_model(cls, tiny) for cls in (SupervisedFinetune, FastLoraSupervisedFinetune))

    def attention(model) -> set[str]:  # noqa: ANN001
        return {type(layer.attention).__name__ for layer in model.llm.get_base_model().model.layers}

    assert attention(stock) == {"InternLM2Attention"}  # eager: matmul, mask, softmax, matmul
    assert attention(fast) == {"InternLM2SdpaAttention"}
    data = padded_batch()
    (loss_stock, grads_stock), (loss_fast, grads_fast) = loss_and_grads(stock, data), loss_and_grads(fast, data)
    torch.testing.assert_close(loss_fast, loss_stock)
    assert grads_fast.keys() == grads_stock.keys() and any("lora_B" in n for n in grads_fast)
    for name in grads_stock:
        torch.testing.assert_close(grads_fast[name], grads_stock[name], rtol=1e-4, atol=1e-6, msg=name)


def test_plain_rope_in_training_compiles_without_graph_breaks(tiny: Path) -> None:
    """InternLM2's dynamic-NTK RoPE branches on `max(position_ids) + 1` in every layer (a graph break each,
    a GPU sync each); in training rows within max_position_embeddings take its plain path: same losses, no
    break. Longer rows and generation keep the dynamic path."""
    import torch
    from torch._dynamo.utils import counters
    from xtuner.model import SupervisedFinetune

    from xtflow.xtuner_plugins import FastLoraSupervisedFinetune, compile_decoder_layers

    data = padded_batch()
    results = {}
    for cls in (SupervisedFinetune, FastLoraSupervisedFinetune):
        model = lora_model(cls, tiny)
        eager_loss = model(dict(data), mode="loss")["loss"].detach()
        torch._dynamo.reset()
        counters.clear()
        compile_decoder_layers(model.llm, backend="eager")
        compiled_loss = model(dict(data), mode="loss")["loss"].detach()
        results[cls.__name__] = (eager_loss, compiled_loss, sum(counters["graph_break"].values()))
    torch._dynamo.reset()
    stock, fast = results["SupervisedFinetune"], results["FastLoraSupervisedFinetune"]
    assert stock[2] > 0 and fast[2] == 0, results
    torch.testing.assert_close(fast[0], stock[0])
    torch.testing.assert_close(fast[1], stock[1])

    rope = lora_model(FastLoraSupervisedFinetune, tiny).llm.get_base_model().model.layers[0].attention.rotary_emb
    x = torch.zeros(1, 2, 1, 8)
    long = torch.arange(2 * SPEC.max_position_embeddings)[None]  # past max_position_embeddings: scaled
    plain = super(type(rope), rope).forward(x, long)
    dynamic = type(rope).forward(rope, x, long)
    assert not torch.allclose(plain[0], dynamic[0])
    torch.testing.assert_close(rope(x, long), dynamic)


def test_lora_targets(tiny: Path, tmp_path: Path) -> None:
    """xtuner.lora.target_modules: null is XTuner's choice (InternLM2's `output` included, Llama's lm_head
    not), all-linear leaves the output layer out, a list is taken as given; unknown names are refused."""
    from transformers import AutoModelForCausalLM

    from xtflow.base_model import check_lora_targets
    from xtflow.errors import XtflowError
    from xtflow.xtuner_plugins import lora_target_names

    internlm2 = AutoModelForCausalLM.from_pretrained(tiny, trust_remote_code=True)
    body = ["w1", "w2", "w3", "wo", "wqkv"]
    assert lora_target_names(internlm2, None) == sorted(["output", *body])
    assert lora_target_names(internlm2, "all-linear") == body
    assert lora_target_names(internlm2, {"wqkv", "wo"}) == ["wo", "wqkv"]  # peft keeps a list as a set
    llama_dir = tmp_path / "llama"
    build_tiny_model(TinyModelSpec(400, 16, 32, 1, 2, 64, 0), llama_dir)
    llama = AutoModelForCausalLM.from_pretrained(llama_dir)
    assert lora_target_names(llama, None) == lora_target_names(llama, "all-linear")
    assert "lm_head" not in lora_target_names(llama, None)

    check_lora_targets(["wqkv", "output"], tiny)
    with pytest.raises(XtflowError) as err:
        check_lora_targets(["wqkv", "q_proj"], tiny)
    assert str(err.value) == (
        f"config key 'xtuner.lora.target_modules': 'q_proj' is not a linear layer of the base model {tiny} "
        "(its linear layers: output, w1, w2, w3, wo, wqkv)"
    )


def test_written_config_carries_the_lora_targets(tmp_path: Path) -> None:
    from mmengine.config import Config

    from xtflow.settings import validate
    from xtflow.xtuner_config import settings_from_config, write_config

    for targets in (None, "all-linear", ["wqkv", "wo"]):
        xt = validate(set_key({}, "xtuner.lora.target_modules", targets))["xtuner"]
        write_config(xt["base_config"], settings_from_config(xt, Path("m"), Path("d.json")), tmp_path / "c.py")
        assert Config.fromfile(str(tmp_path / "c.py")).model.lora.get("target_modules") == targets


def test_workflow_trains_internlm2_with_sdpa_and_xtuners_lora_targets(internlm2_run: Path) -> None:
    log = (internlm2_run / "logs" / "train.log").read_text(encoding="utf-8", errors="replace")
    assert "xtflow: attn_implementation sdpa for InternLM2Config" in log
    assert "xtflow: plain RoPE in training for 4 dynamic-NTK rotary embeddings" in log
    (total,) = re.findall(r"^xtflow: \d+ samples, .* = (\d+) iterations", log, re.MULTILINE)
    assert f"Iter(train) [{int(total) // 10 * 10}/{total}]" in log  # mmengine logs every 10 iterations
    adapter = json.loads((internlm2_run / "results" / "hf_adapter" / "adapter_config.json").read_text())
    assert adapter["target_modules"] == ["output", "w1", "w2", "w3", "wo", "wqkv"]  # XTuner's choice


def test_merged_internlm2_keeps_bf16_and_its_code(internlm2_run: Path) -> None:
    """XTuner's merge tool wrote float16 whatever the base model's dtype; the merge stage keeps bfloat16,
    the code files and auto_map, and the result loads with trust_remote_code and generates."""
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base, final = internlm2_run / "resources" / "base_model", internlm2_run / "results" / "final_model"
    config = json.loads((final / "config.json").read_text(encoding="utf-8"))
    assert (
        config["torch_dtype"] == "bfloat16"
        and config["auto_map"] == json.loads((base / "config.json").read_text(encoding="utf-8"))["auto_map"]
    )
    for name in INTERNLM2_CODE:
        assert (final / name).read_bytes() == (base / name).read_bytes()
    with safe_open(final / "model.safetensors", "pt") as f:
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}
        merged_wqkv = f.get_tensor("model.layers.0.attention.wqkv.weight")
    assert dtypes == {torch.bfloat16}
    with safe_open(base / "model.safetensors", "pt") as f:
        assert not torch.equal(merged_wqkv, f.get_tensor("model.layers.0.attention.wqkv.weight"))
    model = AutoModelForCausalLM.from_pretrained(final, trust_remote_code=True, torch_dtype="auto")
    assert type(model).__name__ == "InternLM2ForCausalLM" and model.dtype == torch.bfloat16
    tok = AutoTokenizer.from_pretrained(final, trust_remote_code=True)
    ids = tok("Who are you?", return_tensors="pt")
    assert model.generate(**ids, max_new_tokens=4, do_sample=False).shape[1] > ids["input_ids"].shape[1]


def test_internlm2_evaluates_and_chats(internlm2_run: Path) -> None:
    import csv

    with open(internlm2_run / "results" / "eval" / "summary.csv", encoding="utf-8") as fh:
        scored = {(row["model"], row["metric"]) for row in csv.DictReader(fh)}
    assert {("base", "identity_accuracy"), ("final", "identity_accuracy"), ("final", "retention")} <= scored
    proc = subprocess.run(
        [sys.executable, "-m", "xtflow.chat", "--workdir", str(internlm2_run), "-q", "Who are you?"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = [line for line in proc.stderr.splitlines() if line.startswith("xtflow: loaded model")]
    assert loaded and loaded[0].endswith("results/final_model")
