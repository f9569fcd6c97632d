"""Give the tiny default base model something to lose: teach it the general Q&A set.

A real base model (internlm2-chat-1_8b) already answers general questions, and the tutorial's
lesson is that careless fine-tuning destroys that. The tiny embedded default knows nothing, so this
stage teaches it the general set (`xtflow.general_set`) before any identity fine-tuning, in the same
chat prompt format the workflow trains and evaluates with. Full fine-tuning on CPU, seeded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from xtflow.chat_model import ChatModel, RunSettings
from xtflow.fsutil import atomic_dir
from xtflow.general_set import general_qa
from xtflow.progress import ProgressLine


@dataclass(frozen=True)
class SkillSpec:
    """Config `base_model.general_skill`."""

    epochs: int
    lr: float
    seed: int


def teach(model_in: Path, out_dir: Path, spec: SkillSpec, prompt_template: str) -> dict[str, float]:
    """Full fine-tuning of the model in `model_in` on the general set; writes `out_dir` atomically.
    Returns the final training loss and the share of the set answered correctly (greedy)."""
    import torch

    torch.manual_seed(spec.seed)
    chat = ChatModel(model_in, RunSettings(prompt_template=prompt_template, system=""), device="cpu")
    tok, model = chat.tokenizer, chat.model
    suffix = chat.template.get("SUFFIX", "")
    qa = general_qa()
    rows = []
    for x in qa:
        prompt = chat.token_ids(chat.prompt([], x.question))
        answer = tok.encode(x.answer + suffix, add_special_tokens=False)
        rows.append((prompt + answer, [-100] * len(prompt) + answer))
    width = max(len(ids) for ids, _ in rows)
    pad = tok.pad_token_id
    ids = torch.tensor([r + [pad] * (width - len(r)) for r, _ in rows])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
    mask = (torch.arange(width)[None, :] < torch.tensor([len(r) for r, _ in rows])[:, None]).long()

    model.train()
    # Only the transformer blocks learn: with the token embeddings and the output layer trained on
    # 80 short answers, every token those answers never use would be pushed far down in the output
    # layer, where LoRA (which adapts the blocks only, as XTuner sets it up) cannot lift it back.
    for module in (model.get_input_embeddings(), model.get_output_embeddings()):
        module.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=0.0)
    # one-cycle (10% warm-up, then cosine down); its warm-up needs 2+ steps, so short runs warm up
    # longer, and 1-2 epochs keep the rate constant
    sched = (
        torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=spec.lr, total_steps=spec.epochs, pct_start=max(0.1, 2.5 / spec.epochs)
        )
        if spec.epochs >= 3
        else torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)
    )
    loss = torch.tensor(float("nan"))
    live = ProgressLine("general_skill")
    for epoch in range(spec.epochs):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        live.update(f"epoch {epoch + 1}/{spec.epochs}, loss {loss.item():.4f}")
        if epoch % 50 == 0 or epoch == spec.epochs - 1:
            print(f"xtflow: general skill epoch {epoch + 1}/{spec.epochs} loss {loss.item():.4f}", flush=True)
    live.close()
    model.eval()
    replies = chat.reply_batch([x.question for x in qa], max_new_tokens=24, batch_size=len(qa))
    accuracy = sum(x.reference in r for x, r in zip(qa, replies)) / len(qa)
    print(f"xtflow: general skill: {accuracy:.3f} of the {len(qa)} questions answered correctly", flush=True)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        for extra in model_in.glob("xtflow_*.json"):
            (tmp / extra.name).write_bytes(extra.read_bytes())
        (tmp / "xtflow_general_skill.json").write_text(
            json.dumps(
                {
                    "epochs": spec.epochs,
                    "lr": spec.lr,
                    "seed": spec.seed,
                    "final_loss": round(loss.item(), 4),
                    "accuracy": accuracy,
                },
                indent=2,
                sort_keys=True,
            )
            + "\n",
            encoding="utf-8",
        )
    return {"loss": loss.item(), "accuracy": accuracy}
