"""The LLaVA target's parts, each alone: record checks, generated data, configs, the projector check,
the dataset's process bound, the scoring rule, the training fingerprint. (End to end: test_llava.py.)"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from xtflow.errors import XtflowError
from xtflow.llava_dataset import check_record, write_split
from xtflow.llava_evaluate import is_right, summary_row
from xtflow.settings import validate

GENERATED = {"pretrain": 12, "finetune": 12, "test": 6, "image_size": 32, "seed": 0}


def turns(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"from": who, "value": value} for who, value in pairs]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image

    folder = tmp_path_factory.mktemp("images")
    Image.new("RGB", (8, 8), (255, 0, 0)).save(folder / "red.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    return folder


RECORD_CASES = [
    ({"image": "red.png", "conversations": turns(("human", "<image>\nColour?"), ("gpt", "Red."))}, None),
    ({"conversations": turns(("human", "Hi"), ("gpt", "Hello."))}, None),  # text only: allowed, as in LLaVA-Instruct
    (
        {
            "image": "red.png",
            "conversations": turns(("human", "<image>\nA?"), ("gpt", "B."), ("human", "C?"), ("gpt", "D.")),
        },
        None,  # LLaVA-Instruct's multi-turn records: the image in the first human turn only
    ),
    ({"image": "red.png", "conversations": turns(("human", "Colour?"), ("gpt", "Red."))}, "hold 0 '<image>' tokens"),
    (
        {
            "image": "red.png",
            "conversations": turns(("human", "<image>A?"), ("gpt", "B."), ("human", "<image>C?"), ("gpt", "D.")),
        },
        "hold 2 '<image>' tokens; a record with an image needs exactly one",
    ),
    ({"conversations": turns(("human", "<image>\nColour?"), ("gpt", "Red."))}, "holds '<image>' but names no image"),
    (
        {"image": "gone.png", "conversations": turns(("human", "<image>"), ("gpt", "x"))},
        "image 'gone.png' does not exist in",
    ),
    (
        {"image": "broken.png", "conversations": turns(("human", "<image>"), ("gpt", "x"))},
        "image 'broken.png' does not decode",
    ),
    ({"image": "../red.png", "conversations": turns(("human", "<image>"), ("gpt", "x"))}, "must be a path inside"),
    (
        {"image": "red.png", "conversations": turns(("user", "<image>"), ("gpt", "x"))},
        "turn 0: 'from' must be 'human' or 'gpt'",
    ),
    ({"image": "red.png", "conversations": turns(("human", "<image>"), ("gpt", " "))}, "turn 1: 'value' is empty"),
    ({"image": "red.png", "conversations": turns(("human", "<image>"), ("gpt", "<image>"))}, "a 'gpt' turn holds"),
    ({"image": "red.png", "conversations": turns(("human", "<image>"))}, "has no 'gpt' turn"),
    ({"image": "red.png"}, "has no 'conversations' list"),
    (["not", "a", "record"], "not a JSON object"),
]


@pytest.mark.parametrize("record,problem", RECORD_CASES, ids=[str(i) for i in range(len(RECORD_CASES))])
def test_record_check(images: Path, record: object, problem: str | None) -> None:
    found = check_record(record, images)
    assert (found is None) if problem is None else (problem in (found or "")), found


def test_user_split_names_file_and_record(images: Path, tmp_path: Path) -> None:
    data = tmp_path / "mine.json"
    good = {"image": "red.png", "conversations": turns(("human", "<image>\nColour?"), ("gpt", "Red."))}
    data.write_text(json.dumps([good, {**good, "image": "gone.png"}]), encoding="utf-8")
    with pytest.raises(XtflowError) as err:
        write_split(tmp_path / "out", {"json": str(data), "images": str(images)}, "finetune", GENERATED)
    assert str(err.value) == f"{data}: record 1: image 'gone.png' does not exist in {images}"
    assert not (tmp_path / "out").exists()
    data.write_text(json.dumps([good]), encoding="utf-8")
    assert write_split(tmp_path / "out", {"json": str(data), "images": str(images)}, "finetune", GENERATED) == 1
    written = json.loads((tmp_path / "out" / "records.json").read_text(encoding="utf-8"))
    assert written[0]["id"] == "0"  # XTuner's dataset needs one
    assert (tmp_path / "out" / "images").resolve() == images.resolve()  # linked, not copied
    assert (tmp_path / "out" / "sample.png").is_file()
    for text, message in (("{", "not valid JSON"), ("{}", "must be a JSON list of LLaVA records, got a JSON dict")):
        data.write_text(text, encoding="utf-8")
        with pytest.raises(XtflowError, match=message):
            write_split(tmp_path / "out2", {"json": str(data), "images": str(images)}, "finetune", GENERATED)


def test_generated_splits_are_seeded_and_balanced(tmp_path: Path) -> None:
    for out in ("a", "b"):
        for split in ("pretrain", "test"):
            write_split(tmp_path / out / split, None, split, GENERATED)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 2 * 2 + 12 + 6
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    test = json.loads((tmp_path / "a" / "test" / "records.json").read_text(encoding="utf-8"))
    assert sorted(r["conversations"][1]["value"] for r in test) == [
        "Blue.",
        "Green.",
        "Orange.",
        "Purple.",
        "Red.",
        "Yellow.",
    ]
    # a split's own stream: the test split does not change with the pretrain split's size
    write_split(tmp_path / "c" / "test", None, "test", {**GENERATED, "pretrain": 99})
    assert (tmp_path / "c" / "test" / "records.json").read_bytes() == (
        tmp_path / "a" / "test" / "records.json"
    ).read_bytes()


def test_is_right_wants_the_reference_as_whole_words() -> None:
    assert is_right("Red.", "Red.") and is_right("It is red, I think", "Red.")
    assert not is_right("Ready.", "Red.") and not is_right("", "Red.") and not is_right("Blue.", "Red.")
    assert is_right("A red square.", "a red square") and not is_right("A red circle.", "A red square.")


def test_accuracy_comes_with_its_wilson_interval() -> None:
    """As the text pipeline's rates: 117 of 120 right is 0.975, [0.9291, 0.9915] (the Wilson 95% interval:
    (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n), z = 1.96)."""
    assert summary_row("finetuned", [True] * 117 + [False] * 3, 1 / 6) == {
        "model": "finetuned",
        "images": "120",
        "right": "117",
        "accuracy": "0.9750",
        "low": "0.9291",
        "high": "0.9915",
        "baseline": "0.1667",
    }


def stage_config(tmp_path: Path, stage: str, **changes: object) -> object:
    from mmengine.config import Config

    from xtflow.llava_config import stage_settings, write_llava_config

    llava = validate({})["llava"]
    s = replace(stage_settings(llava, stage, "/models/llm", "/models/clip", "/runs/pretrain.pth"), **changes)
    out = tmp_path / f"{stage}.py"
    write_llava_config(llava[stage]["base_config"], s, out)
    return Config.fromfile(str(out))


def test_llava_configs_hold_the_patched_values(tmp_path: Path) -> None:
    cfg = stage_config(tmp_path, "finetune")
    assert cfg.llm_name_or_path == cfg.model.llm.pretrained_model_name_or_path == "/models/llm"
    assert cfg.model.visual_encoder.pretrained_model_name_or_path == "/models/clip"
    assert cfg.model.pretrained_pth == "/runs/pretrain.pth"
    ds = cfg.train_dataloader.dataset
    assert ds.data_path == "results/llava/data/finetune/records.json"
    assert ds.image_folder == "results/llava/data/finetune/images" and ds.max_length == 64 and ds.map_num_proc == 1
    assert ds.type.__name__ == "LLaVADatasetWithProcesses" and cfg.model.type.__name__ == "FastLoraLLaVAModel"
    assert cfg.evaluation_images == "results/llava/data/finetune/sample.png"  # the stock one is a URL
    assert (cfg.model.llm_lora.r, cfg.model.llm_lora.lora_alpha, cfg.model.visual_encoder_lora.r) == (32, 64, 8)
    assert "quantization_config" not in cfg.model.llm and cfg.optim_wrapper.type.__name__ == "OptimWrapper"
    assert cfg.model.use_activation_checkpointing is False and cfg.randomness.seed == 0
    assert cfg.train_dataloader.batch_size == 8 and cfg.optim_wrapper.optimizer.lr == 2e-3
    assert cfg.custom_hooks[1].type.__name__ == "BatchedEvaluateChatHook" and cfg.custom_hooks[1].max_new_tokens == 8
    pretrain = stage_config(tmp_path, "pretrain", warmup_ratio=0)
    assert "pretrained_pth" not in pretrain and "llm_lora" not in pretrain.model
    assert [s.type.__name__ for s in pretrain.param_scheduler] == ["CosineAnnealingLR"]  # no warmup, no LinearLR


def test_gpu_llava_config_keeps_4bit_and_amp(tmp_path: Path) -> None:
    cfg = stage_config(tmp_path, "finetune", dtype="bfloat16", load_in_4bit=True, device="cuda")
    text = (tmp_path / "finetune.py").read_text(encoding="utf-8")
    assert "xtflow CPU shim" not in text and cfg.train_dataloader.pin_memory is True
    assert cfg.model.llm.quantization_config.load_in_4bit is True
    assert str(cfg.model.llm.quantization_config.bnb_4bit_compute_dtype) == "torch.bfloat16"
    assert cfg.optim_wrapper.type.__name__ == "AmpOptimWrapper" and cfg.optim_wrapper.dtype == "bfloat16"


def test_export_of_a_4bit_llm_without_lora_skips_xtuners_fp16_cast() -> None:
    """`pth_to_hf` casts the LLM with `.half()` unless `--fp32`, and transformers refuses that for a 4-bit model
    without LoRA: the recipe's pretraining export failed so on an H100. Such a stage saves only the projector,
    so the llava_adapter rule exports it with `--fp32`; elsewhere `llava.adapter.fp32` holds."""
    import yaml

    from conftest import REPO
    from xtflow.llava_config import export_in_fp32

    recipe = validate(yaml.safe_load((REPO / "config" / "llava_internlm2_chat_1_8b.yaml").read_text(encoding="utf-8")))
    llava = recipe["llava"]
    assert llava["load_in_4bit"] and not llava["adapter"]["fp32"] and llava["finetune"]["llm_lora"]
    assert export_in_fp32(llava, "pretrain") is True
    assert export_in_fp32(llava, "finetune") is False  # a peft model: its LoRA weights are cast, the 4-bit ones not
    plain = validate({"llava": {"adapter": {"fp32": False}}})["llava"]  # not 4-bit: the key decides
    assert (export_in_fp32(plain, "pretrain"), export_in_fp32(plain, "finetune")) == (False, False)
    assert export_in_fp32(validate({})["llava"], "pretrain") is True  # the default key: true


def test_dataset_text_processing_keeps_to_its_process_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """XTuner's LLaVADataset maps with 32 processes whatever it is given; xtflow's takes map_num_proc."""
    import xtuner.dataset.huggingface as hf
    from transformers import CLIPImageProcessor
    from xtuner.dataset import LLaVADataset
    from xtuner.dataset.map_fns import llava_map_fn, template_map_fn_factory
    from xtuner.utils import PROMPT_TEMPLATE

    from xtflow.tiny_model import TinyModelSpec, build_tiny_model
    from xtflow.xtuner_plugins import LLaVADatasetWithProcesses

    write_split(tmp_path / "data", None, "finetune", {**GENERATED, "finetune": 2})  # 32 processes: capped at 2
    build_tiny_model(TinyModelSpec(400, 16, 32, 1, 2, 64, 0), tmp_path / "llm")
    from transformers import AutoTokenizer

    seen: list[int] = []
    process = hf.process
    monkeypatch.setattr(hf, "process", lambda **kw: seen.append(kw["map_num_proc"]) or process(**kw))
    kwargs = dict(
        data_path=str(tmp_path / "data" / "records.json"),
        image_folder=str(tmp_path / "data" / "images"),
        tokenizer=AutoTokenizer.from_pretrained(tmp_path / "llm"),
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size=32),
        dataset_map_fn=llava_map_fn,
        template_map_fn=dict(type=template_map_fn_factory, template=PROMPT_TEMPLATE.internlm2_chat),
        max_length=64,
    )
    assert len(LLaVADatasetWithProcesses(map_num_proc=1, **kwargs)) == 2
    assert len(LLaVADataset(**kwargs)) == 2
    assert seen == [1, 32]


def test_pretrained_projector_check(tmp_path: Path) -> None:
    import torch
    from transformers import CLIPVisionConfig

    from xtflow.llava_projector import check_pretrained_projector

    llm, clip = tmp_path / "llm", tmp_path / "clip"
    llm.mkdir()
    (llm / "config.json").write_text(json.dumps({"hidden_size": 128}), encoding="utf-8")
    CLIPVisionConfig(hidden_size=32).save_pretrained(clip)

    def checkpoint(state: dict) -> Path:
        path = tmp_path / f"{len(list(tmp_path.glob('*.pth')))}.pth"
        torch.save({"state_dict": state, "meta": {}}, path)
        return path

    projector = {"projector.model.0.weight": torch.zeros(128, 32), "projector.model.0.bias": torch.zeros(128)}
    assert check_pretrained_projector(checkpoint(projector), llm, clip, "key") == 2
    lora = {"llm.base_model.model.lm_head.lora_A.weight": torch.zeros(2, 2)}
    with pytest.raises(XtflowError, match="holds no projector weights .*llm.base_model.model.lm_head.lora_A.weight"):
        check_pretrained_projector(checkpoint(lora), llm, clip, "key")
    wrong = {"projector.model.0.weight": torch.zeros(128, 64)}
    with pytest.raises(XtflowError, match="holds a projector from 64 to 128 features, but the visual encoder gives 32"):
        check_pretrained_projector(checkpoint(wrong), llm, clip, "key")
    (tmp_path / "bad.pth").write_bytes(b"\0" * 16)
    with pytest.raises(XtflowError, match="^key: '.*bad.pth' is not a readable checkpoint"):
        check_pretrained_projector(tmp_path / "bad.pth", llm, clip, "key")


def test_fingerprint_covers_the_extra_inputs(tmp_path: Path) -> None:
    """A LLaVA training's images, visual encoder and projector are part of what it resumes from."""
    from xtflow.train import fingerprint

    for name in ("config.py", "data.json", "model/config.json", "images/a/1.png", "projector.pth"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name, encoding="utf-8")
    files = [tmp_path / n for n in ("config.py", "data.json", "model")]

    def fp() -> str:
        return fingerprint(*files, None, 1, [tmp_path / "images", tmp_path / "projector.pth"])

    before = fp()
    assert fp() == before
    (tmp_path / "images" / "a" / "1.png").write_text("another image", encoding="utf-8")
    assert fp() != before
    changed = fp()
    (tmp_path / "projector.pth").write_text("other weights", encoding="utf-8")
    assert fp() != changed
    assert fingerprint(*files, None, 1) == fingerprint(*files, None, 1, ())  # text runs: as before


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from xtflow.llava_encoder import TinyClipSpec, build_tiny_clip
    from xtflow.tiny_model import TinyModelSpec, build_tiny_model

    root = tmp_path_factory.mktemp("models")
    build_tiny_model(TinyModelSpec(400, 16, 32, 1, 2, 256, 0), root / "llm")
    build_tiny_clip(TinyClipSpec(32, 8, 16, 32, 1, 2, 0), root / "clip")
    return root / "llm", root / "clip"


def test_plan_counts_samples_cut_at_max_length(
    tiny_models: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """max_length counts the text; XTuner cuts longer records silently (their answers included): the
    train rule's plan says how many. With the tiny tokenizer the caption prompts take 38-52 tokens and
    the answers 8-13: at 56 some records lose the end of their answer, none loses all of it."""
    from xtflow import paths
    from xtflow.llava_config import stage_settings, write_llava_config
    from xtflow.train import plan_training

    monkeypatch.chdir(tmp_path)  # the written config's paths are the run directory's
    write_split(Path(paths.llava_data("pretrain")), None, "pretrain", GENERATED)
    llava = validate({})["llava"]
    cut = {}
    for max_length in (56, 200):
        s = stage_settings(llava, "pretrain", str(tiny_models[0]), str(tiny_models[1]), None)
        write_llava_config(llava["pretrain"]["base_config"], replace(s, max_length=max_length), tmp_path / "c.py")
        plan = plan_training(tmp_path / "c.py", 1)
        assert (plan.samples, plan.max_length) == (12, max_length)
        cut[max_length] = plan.cut_records
    assert 0 < cut[56] < 12 and cut[200] == 0, cut


def test_llava_model_lists_its_lora_layers_in_a_fixed_order(tiny_models: tuple[Path, Path]) -> None:
    """XTuner's list of layers to adapt comes from a set (its order, and adapter_config.json, varied by run)."""
    from mmengine.config import ConfigDict
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, CLIPVisionModel

    from xtflow.xtuner_plugins import FastLoraLLaVAModel
    from xtflow.xtuner_tools import apply_cpu_shim

    apply_cpu_shim()  # as the written configs do on a CPU
    llm, clip = tiny_models
    model = FastLoraLLaVAModel(
        llm=ConfigDict(type=AutoModelForCausalLM.from_pretrained, pretrained_model_name_or_path=str(llm)),
        visual_encoder=ConfigDict(type=CLIPVisionModel.from_pretrained, pretrained_model_name_or_path=str(clip)),
        freeze_llm=True,
        freeze_visual_encoder=True,
        llm_lora=dict(type=LoraConfig, r=4, lora_alpha=8, task_type="CAUSAL_LM"),
        visual_encoder_lora=dict(type=LoraConfig, r=4, lora_alpha=8),
        use_activation_checkpointing=False,
    )
    llm_targets = model.llm.peft_config["default"].target_modules
    clip_targets = model.visual_encoder.peft_config["default"].target_modules
    assert llm_targets == sorted(llm_targets) and len(llm_targets) == 7  # q k v o gate up down
    assert clip_targets == sorted(clip_targets) and len(clip_targets) == 6  # q k v out_proj fc1 fc2
    assert set(model.state_dict()) == {k for k in model.state_dict() if "lora_" in k or k.startswith("projector.")}


def test_llava_model_samples_a_bf16_llm_from_float32_image_features(tiny_models: tuple[Path, Path]) -> None:
    """XTuner builds the projector in the visual encoder's dtype (float32): its features reached a bf16
    LLM as they are when EvaluateChatHook sampled (no autocast there) and the GPU recipe's pretraining
    failed after its last iteration ("expected mat1 and mat2 to have the same dtype"). Sampled here as
    the hook does, on the CPU, the LLM in bf16 as the recipe loads it."""
    import torch
    from mmengine.config import ConfigDict
    from transformers import AutoModelForCausalLM, CLIPVisionModel
    from xtuner.model.utils import prepare_inputs_labels_for_multimodal

    from xtflow.xtuner_plugins import FastLoraLLaVAModel
    from xtflow.xtuner_tools import apply_cpu_shim

    apply_cpu_shim()
    llm, clip = tiny_models
    model = FastLoraLLaVAModel(
        llm=ConfigDict(
            type=AutoModelForCausalLM.from_pretrained,
            pretrained_model_name_or_path=str(llm),
            torch_dtype=torch.bfloat16,
        ),
        visual_encoder=ConfigDict(type=CLIPVisionModel.from_pretrained, pretrained_model_name_or_path=str(clip)),
        freeze_llm=True,
        freeze_visual_encoder=True,
        use_activation_checkpointing=False,
    ).eval()
    assert model.visual_encoder.dtype == torch.float32 and model.llm.dtype == torch.bfloat16
    image = torch.rand(1, 3, 32, 32)
    with torch.no_grad():  # EvaluateChatHook._eval_images's steps
        hidden = model.visual_encoder(image, output_hidden_states=True).hidden_states[model.visual_select_layer]
        features = model.projector(hidden[:, 1:])
        inputs = prepare_inputs_labels_for_multimodal(
            llm=model.llm, input_ids=torch.tensor([[5, -200, 17, 42]]), pixel_values=features
        )
        reply = model.llm.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert features.dtype == torch.bfloat16 and reply.shape == (1, 3)


def test_llava_model_gives_internlm2_sdpa_and_plain_rope(tmp_path: Path) -> None:
    """XTuner's LLaVAModel leaves InternLM2 (the tutorial's LLM, remote code) on eager attention and its
    dynamic-NTK rotary embedding: xtflow's gives it what the text pipeline's model gives it."""
    from mmengine.config import ConfigDict
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, CLIPVisionModel

    from xtflow.llava_encoder import TinyClipSpec, build_tiny_clip
    from xtflow.tiny_model import TinyModelSpec, build_tiny_model
    from xtflow.xtuner_plugins import FastLoraLLaVAModel
    from xtflow.xtuner_tools import apply_cpu_shim

    apply_cpu_shim()  # as the written configs do on a CPU
    build_tiny_model(TinyModelSpec(400, 16, 32, 1, 2, 256, 0, "internlm2"), tmp_path / "llm")
    build_tiny_clip(TinyClipSpec(32, 8, 16, 32, 1, 2, 0), tmp_path / "clip")
    model = FastLoraLLaVAModel(
        llm=ConfigDict(
            type=AutoModelForCausalLM.from_pretrained,
            pretrained_model_name_or_path=str(tmp_path / "llm"),
            trust_remote_code=True,
        ),
        visual_encoder=ConfigDict(
            type=CLIPVisionModel.from_pretrained, pretrained_model_name_or_path=str(tmp_path / "clip")
        ),
        freeze_llm=True,
        freeze_visual_encoder=True,
        llm_lora=dict(type=LoraConfig, r=4, lora_alpha=8, task_type="CAUSAL_LM"),
        use_activation_checkpointing=False,
    )
    assert {type(layer.attention).__name__ for layer in model.llm.get_base_model().model.layers} == {
        "InternLM2SdpaAttention"
    }
    ropes = [m for m in model.llm.modules() if type(m).__name__ == "InternLM2DynamicNTKScalingRotaryEmbedding"]
    assert ropes and all(m.forward.__func__.__name__ == "_rope_plain_in_training" for m in ropes)


def test_internlm2_generates_from_embeddings_as_from_token_ids(tmp_path: Path) -> None:
    """LLaVA prompts reach the LLM as embeddings; InternLM2's code (transformers 4.48) then took the empty
    token ids in the first step and failed. Greedy replies from a prompt's embeddings equal those from its
    ids, plain and LoRA-wrapped (as XTuner's sampling hook and xtflow's LLaVA chat call it)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from xtflow.remote_code import generate_from_embeddings
    from xtflow.tiny_model import TinyModelSpec, build_tiny_model

    build_tiny_model(TinyModelSpec(400, 16, 32, 1, 2, 256, 0, "internlm2"), tmp_path / "llm")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "llm", trust_remote_code=True).eval()
    ids = torch.tensor([[5, 17, 42, 99, 7, 3]])
    greedy = dict(max_new_tokens=6, do_sample=False, attention_mask=torch.ones_like(ids))
    for wrapped in (model, get_peft_model(model, LoraConfig(r=2, target_modules=["wqkv"]))):
        assert generate_from_embeddings(wrapped)
        with torch.no_grad():
            from_ids = wrapped.generate(input_ids=ids, **greedy)[0, ids.shape[1] :]
            from_embeddings = wrapped.generate(inputs_embeds=model.get_input_embeddings()(ids), **greedy)[0]
        assert from_embeddings.tolist() == from_ids.tolist()
