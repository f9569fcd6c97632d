"""What a model's own code (`trust_remote_code`) needs to run under the pinned transformers.

- InternLM2 (internlm2-chat-1_8b, the tutorial's LLM) generates from `inputs_embeds`, how a LLaVA prompt
  (text with the image's features in place) reaches the LLM, only when `past_key_values is None` in the
  first step: transformers 4.48's `generate` passes an empty cache object from the first step, so the
  code takes the (empty) token ids instead and fails ("The size of tensor a (0) must match the size of
  tensor b (N)"): in XTuner's sampling hook of LLaVA training, its chat, and xtflow's LLaVA chat and
  evaluation. `generate_from_embeddings` gives that first step no cache (the code then takes the
  embeddings) and hands the empty cache object on for the model to fill; later steps are unchanged.
"""

from __future__ import annotations

from typing import Any

PATCHED = "_xtflow_generates_from_embeddings"


def generate_from_embeddings(model: Any) -> bool:
    """Let `model` (a causal LM, peft-wrapped or not) generate from `inputs_embeds`; returns whether its
    class needed it (InternLM2's). Patches the class once, and a peft wrapper's saved method."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cls = type(base)
    if cls.__name__ != "InternLM2ForCausalLM":
        return False
    if not getattr(cls, PATCHED, False):
        original = cls.prepare_inputs_for_generation

        # (named parameters: generate looks for `inputs_embeds` in this signature)
        def prepare_inputs_for_generation(
            self: Any,
            input_ids: Any,
            past_key_values: Any = None,
            attention_mask: Any = None,
            inputs_embeds: Any = None,
            **kwargs: Any,
        ) -> dict[str, Any]:
            first = inputs_embeds is not None and past_key_values is not None and past_key_values.get_seq_length() == 0
            inputs = original(
                self,
                input_ids,
                past_key_values=None if first else past_key_values,
                attention_mask=attention_mask,
                inputs_embeds=inputs_embeds,
                **kwargs,
            )
            if first:
                inputs["past_key_values"] = past_key_values
            return inputs

        cls.prepare_inputs_for_generation = prepare_inputs_for_generation
        setattr(cls, PATCHED, True)
    if hasattr(model, "base_model_prepare_inputs_for_generation"):  # peft keeps the method it wrapped
        model.base_model_prepare_inputs_for_generation = model.base_model.prepare_inputs_for_generation
    return True
