"""Streamlit web demo: chat with a run's final model (or its base model, for comparison), or, where
the LLaVA target was built, with its fine-tuned LLaVA model about an uploaded image.

Started by `python -m xtflow.web` (see there); not meant to be imported. The models are
loaded once per server process (st.cache_resource), not per message.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import streamlit as st

from xtflow.chat_model import ChatModel, RunSettings, Sampling, model_paths
from xtflow.errors import XtflowError
from xtflow.llava_model import LLAVA_MODELS, LlavaChatModel, load_image


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--model", default="final")
    return p.parse_args(sys.argv[1:])


@st.cache_resource(show_spinner="Loading the model (once per server)...")
def load_model(which: str, workdir: str, config: str) -> ChatModel:
    if which in LLAVA_MODELS:
        return LlavaChatModel.load(which, Path(workdir), Path(config))
    model_dir, adapter_dir = model_paths(which, Path(workdir))
    return ChatModel(model_dir, RunSettings.from_config(Path(config)), adapter_dir)


def image_upload() -> Any | None:
    """The uploaded image (PIL), shown above the chat; a new image starts a new chat."""
    upload = st.sidebar.file_uploader("Image", type=["png", "jpg", "jpeg", "webp", "bmp"])
    if upload is None:
        return None
    if st.session_state.get("image_id") != upload.file_id:
        st.session_state.image_id = upload.file_id
        st.session_state.messages = []
    image = load_image(upload)
    st.image(image, caption=upload.name, width=160)
    return image


def main() -> None:
    args = parse_args()
    st.set_page_config(page_title="xtflow chat", page_icon="💬")
    with st.sidebar:
        st.header("Settings")
        models = ["final", "base"] + (["llava"] if (args.workdir / LLAVA_MODELS["llava"]).is_dir() else [])
        which = st.radio(
            "Model",
            models,
            index=models.index(args.model) if args.model in models else 0,
            help="final: results/final_model; base: resources/base_model, for comparison; "
            "llava: the LLaVA target's fine-tuned model, about an image",
        )
        max_new_tokens = st.slider("Max length (new tokens)", 8, 1024, 128, step=8)
        top_p = st.slider("Top P", 0.01, 1.0, 0.8, step=0.01)
        temperature = st.slider("Temperature", 0.0, 1.5, 0.0, step=0.05, help="0: greedy")
        if st.button("Clear chat history", type="secondary"):
            st.session_state.messages = []
    chat = load_model(which, str(args.workdir), str(args.config))
    st.title("xtflow chat")
    if isinstance(chat, LlavaChatModel):
        st.caption(f"{which} model · `{chat.export_dir}` · template `{chat.settings.prompt_template}`")
        chat = chat.with_image(image_upload())
    else:
        st.caption(f"{which} model · `{chat.model_dir}` · template `{chat.settings.prompt_template}`")

    messages: list[dict[str, str]] = st.session_state.setdefault("messages", [])
    question = st.chat_input("Ask something")
    if question and messages and messages[-1]["role"] == "user":
        messages.pop()  # a question whose reply was interrupted by this new one
    for m in messages:
        with st.chat_message(m["role"]):
            st.markdown(m["content"])
    done = st.empty()
    if question:
        history = [(messages[i]["content"], messages[i + 1]["content"]) for i in range(0, len(messages) - 1, 2)]
        messages.append({"role": "user", "content": question})
        with st.chat_message("user"):
            st.markdown(question)
        sampling = Sampling(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens)
        try:
            with st.chat_message("assistant"):
                answer = st.write_stream(chat.stream(history, question, sampling))
        except XtflowError as e:  # a prompt too long for the model, a failed generation: said, not hung
            messages.pop()
            st.error(f"xtflow: error: {e}")
        else:
            messages.append({"role": "assistant", "content": str(answer)})
        done = st.empty()
    done.caption(f"{len(messages) // 2} replies in this chat")


main()
