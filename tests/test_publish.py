"""Publishing: the default target builds the model hub folders (rule publish; the shared completed
run has them: real transformers/peft loading, the card's own code run as written), `snakemake push`
sends them to a git remote with LFS (a local bare repository: git-lfs's standalone transfer agent
serves file:// remotes), and a Hugging Face push without a token is refused before anything reaches
the hub (a local HTTP server stands in for the hub's address and records every request)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import REPO, completed_config, snakemake, write_config
from xtflow.evaluate import summary_columns

LFS_POINTER = b"version https://git-lfs.github.com/spec/v1"


def git(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=120
    )
    assert proc.returncode == 0, f"git {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def bare_repo(path: Path, with_initial_commit: bool = False) -> str:
    """A local git remote; with an initial commit as a hub makes one (.gitattributes, README.md)."""
    git("init", "-q", "--bare", "-b", "main", str(path))
    if with_initial_commit:
        seed = path.with_name(path.name + ".seed")
        git("clone", "-q", str(path), str(seed))
        (seed / ".gitattributes").write_text("*.zip filter=lfs diff=lfs merge=lfs -text\n", encoding="utf-8")
        (seed / "README.md").write_text("---\nlicense: mit\n---\nplaceholder\n", encoding="utf-8")
        git("add", "-A", cwd=seed)
        git("-c", "user.name=hub", "-c", "user.email=hub@localhost", "commit", "-q", "-m", "init", cwd=seed)
        git("push", "-q", "origin", "HEAD:main", cwd=seed)
        shutil.rmtree(seed)
    return path.as_uri()


@pytest.fixture(scope="module")
def pushed(completed_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the completed run whose config names two local git remotes (hub: git; the adapter's
    has a first commit, as a hub makes one), after `snakemake push`: only the push job runs."""
    root = tmp_path_factory.mktemp("push")
    run = root / "run"
    shutil.copytree(completed_run, run, symlinks=True)
    config = completed_config()
    config["publish"] = {
        "hub": "git",
        "repo_id": bare_repo(root / "model.git"),
        "adapter_repo_id": bare_repo(root / "adapter.git", with_initial_commit=True),
    }
    write_config(run, config)
    proc = snakemake(run, "push", check=True, timeout=600)
    assert re.findall(r"^(?:local)?rule (\w+):", proc.stderr + proc.stdout, flags=re.M) == ["push"]
    return run


def model_dir(run: Path) -> Path:
    return run / "results" / "publish" / "model"


def adapter_dir(run: Path) -> Path:
    return run / "results" / "publish" / "adapter"


def names(folder: Path) -> list[str]:
    """The published files of a folder (Snakemake's empty .snakemake_timestamp is not one: push leaves it out)."""
    return sorted(p.name for p in folder.iterdir() if p.name != ".snakemake_timestamp")


def published_files(run: Path) -> dict[str, bytes]:
    return {
        f"{folder}/{name}": (folder / name).read_bytes()
        for folder in (model_dir(run), adapter_dir(run))
        for name in names(folder)
    }


def publish_inputs(results: Path, **changed: Path) -> Any:
    """The publish stage's inputs in a run's results/ (and resources/base_model), some replaced."""
    from xtflow.publish import PublishInputs

    inputs = {
        "final_model": results / "final_model",
        "adapter": results / "hf_adapter",
        "base_model": results.parent / "resources" / "base_model",
        "summary": results / "eval" / "summary.csv",
        "replies": results / "eval" / "replies.csv",
        "dataset": results / "data" / "train.json",
        "loss_csv": results / "report" / "loss.csv",
    }
    return PublishInputs(**{**inputs, **changed})


def python_block(readme: Path) -> str:
    blocks = re.findall(r"```python\n(.*?)```", readme.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) == 1, "the card holds one Python example"
    return blocks[0]


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300, env=env, check=False
    )


# -- the folders ---------------------------------------------------------------------------------------


def test_publish_builds_both_folders_and_push_is_never_implicit(completed_run: Path) -> None:
    model = set(names(model_dir(completed_run)))
    assert {
        "README.md",
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "xtuner_config.py",
    } <= model
    adapter = set(names(adapter_dir(completed_run)))
    assert {"README.md", "adapter_config.json", "adapter_model.safetensors", "xtuner_config.py"} <= adapter
    # the default target built them (rule publish), and pushed nothing
    assert (completed_run / "logs" / "publish.log").is_file()
    assert not (completed_run / "logs" / "push.log").exists()
    assert not (completed_run / "results" / "publish" / "push.json").exists()


def test_card_holds_the_numbers_of_summary_csv(completed_run: Path) -> None:
    from huggingface_hub import ModelCard

    rows = summary_columns(completed_run / "results" / "eval" / "summary.csv")
    columns = list(rows["final"])
    for folder in (model_dir(completed_run), adapter_dir(completed_run)):
        card = ModelCard.load(folder / "README.md")
        text = card.text
        for column in columns:
            row = next(ln for ln in text.splitlines() if ln.startswith(f"| `{column}` |"))
            cells = [c.strip() for c in row.strip("|").split("|")]
            assert cells[1:3] == [rows["base"].get(column) or "-", rows["final"][column] or "-"], row
            assert cells[3], f"no meaning given for {column}"
        # the machine-readable copy: model-index
        found = {r.metric_type: r.metric_value for r in card.data.eval_results}
        for column in (c for c in columns if rows["final"][c]):  # an empty cell (no interval) has no entry
            assert found[column] == pytest.approx(float(rows["final"][column]))
            if rows["base"].get(column):
                assert found[f"{column}_base_model"] == pytest.approx(float(rows["base"][column]))
        assert card.data.tags == ["xtuner", "lora", "self-cognition", "xtflow"]
        assert card.data.language == ["en", "zh"] and card.data.pipeline_tag == "text-generation"
        assert "83 held-out identity questions" in text  # the probe sets' sizes
        assert "| `xtuner.lr` | 0.005 |" in text and "| records | 224 |" in text  # recipe, dataset
        assert re.search(r"\| transformers \| 4\.48\.0 \|", text)  # package versions
    assert ModelCard.load(model_dir(completed_run) / "README.md").data.library_name == "transformers"
    assert ModelCard.load(adapter_dir(completed_run) / "README.md").data.library_name == "peft"


def test_card_reads_any_column_of_summary_csv(tmp_path: Path) -> None:
    """summary.csv is read generically: a new column (an interval bound, say) reaches the card."""
    from xtflow.model_card import Evaluation

    summary = tmp_path / "summary.csv"
    summary.write_text(
        "model,probes,metric,value,k,n,low,high\n"
        "base,single,identity_accuracy,0.1000,1,12,0.0200,0.3000\n"
        "final,single,identity_accuracy,0.9000,11,12,0.7000,0.9800\n"
        "final,conversation,over_trigger_rate,0.0500,1,20,0.0100,0.2400\n",
        encoding="utf-8",
    )
    replies = tmp_path / "replies.csv"
    replies.write_text("model,set,question,reply\nfinal,identity,q,r\nfinal,general,q,r\n", encoding="utf-8")
    ev = Evaluation.read(summary, replies)
    table = {r["metric"]: r for r in ev.table()}
    assert table["identity_accuracy_low"]["final"] == "0.7000"
    assert table["identity_accuracy_low"]["meaning"] == "low of identity_accuracy"
    assert table["conversation_over_trigger_rate_high"]["final"] == "0.2400"
    assert table["conversation_over_trigger_rate"]["base"] == "-"
    assert "after a previous turn" in table["conversation_over_trigger_rate"]["meaning"]
    assert {r.metric_type for r in ev.eval_results("probes")} >= {
        "identity_accuracy_low",
        "identity_accuracy_n_base_model",
    }
    assert ev.probe_sizes == {"identity": 1, "general": 1}


def test_card_code_names_the_hub_repository() -> None:
    """Pushed to Hugging Face, the card's code loads the model by its repository id."""
    from xtflow.model_card import adapter_snippet, chat_snippet

    code = chat_snippet("you/xtbot", "你是 XtBot。", remote_code=True)
    compile(code, "card", "exec")
    assert 'model_id = "you/xtbot"\n' in code and "trust_remote_code=True" in code and "你是 XtBot。" in code
    code = adapter_snippet("internlm/internlm2-chat-1_8b", "you/xtbot-lora", "", remote_code=False)
    compile(code, "card", "exec")
    assert 'base_id = "internlm/internlm2-chat-1_8b"' in code and 'adapter_id = "you/xtbot-lora"\n' in code


def test_published_model_answers_from_another_directory(completed_run: Path, tmp_path: Path) -> None:
    """The card's transformers code, run as written in a copy of the folder elsewhere, answers as the
    assistant, prompted by the tokenizer's chat template and stopped by the generation config."""
    moved = tmp_path / "elsewhere" / "xtbot"
    shutil.copytree(model_dir(completed_run), moved)
    # the card's code as written, then a check of what it generated: it ended at a stop token of the
    # generation config, before the bound
    check = (
        "\nimport json\nstops = json.load(open('generation_config.json'))['eos_token_id']\n"
        "new = output[0, inputs['input_ids'].shape[1]:].tolist()\n"
        "assert new[-1] in stops and len(new) < 64, new\n"
        "print('stopped by', tokenizer.decode(new[-1:]))\n"
    )
    proc = run_python(python_block(moved / "README.md") + check, moved)
    assert proc.returncode == 0, proc.stderr[-3000:]
    answer, stop = proc.stdout.strip().splitlines()[-2:]
    assert "XtBot" in answer
    assert stop in ("stopped by <|im_end|>", "stopped by </s>")


def test_card_chat_command_runs(completed_run: Path) -> None:
    """The card's `python -m xtflow.chat` command, in the run directory."""
    text = (model_dir(completed_run) / "README.md").read_text(encoding="utf-8")
    command = re.search(r"`python -m xtflow\.chat -q \"([^\"]+)\"`", text)
    assert command
    proc = subprocess.run(
        [sys.executable, "-m", "xtflow.chat", "-q", command.group(1)],
        cwd=completed_run,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0 and "XtBot" in proc.stdout, proc.stderr[-2000:]


def test_adapter_on_its_base_model_is_the_published_model(completed_run: Path, tmp_path: Path) -> None:
    """The adapter's card code (its base_id pointed at the tiny base model, which is not on a hub)
    answers as the assistant, and base + adapter compute what the published merged model computes."""
    moved = tmp_path / "adapter"
    shutil.copytree(adapter_dir(completed_run), moved)
    code = python_block(moved / "README.md")
    base = completed_run / "resources" / "base_model"
    code, n = re.subn(r"^base_id = .*$", f"base_id = {json.dumps(str(base))}", code, flags=re.M)
    assert n == 1
    check = (
        "\nimport torch\nids = torch.tensor([[1, 17, 42, 99, 5, 7]])\n"
        f"merged = AutoModelForCausalLM.from_pretrained({json.dumps(str(model_dir(completed_run)))}).float()\n"
        "with torch.no_grad():\n"
        "    assert torch.allclose(model.float()(ids).logits, merged(ids).logits, atol=2e-2)\n"
        "print('same logits')\n"
    )
    proc = run_python(code + check, moved)
    assert proc.returncode == 0, proc.stderr[-3000:]
    answer, same = proc.stdout.strip().splitlines()[-2:]
    assert "XtBot" in answer and same == "same logits"


def test_nothing_published_names_a_path_of_this_machine(completed_run: Path) -> None:
    needles = {str(completed_run), str(completed_run.resolve()), str(REPO), str(REPO.resolve())}
    for name, data in published_files(completed_run).items():
        for needle in needles:
            assert needle.encode() not in data, f"{name} holds {needle}"
    adapter_config = json.loads((adapter_dir(completed_run) / "adapter_config.json").read_text(encoding="utf-8"))
    assert adapter_config["base_model_name_or_path"] == "resources/base_model"  # relative: where a run keeps it
    config = json.loads((model_dir(completed_run) / "config.json").read_text(encoding="utf-8"))
    assert config["_name_or_path"] == "resources/base_model"


def test_a_machine_path_in_a_published_file_is_refused(tmp_path: Path) -> None:
    from xtflow.errors import XtflowError
    from xtflow.publish import check_no_machine_paths

    (tmp_path / "config.json").write_text(json.dumps({"_name_or_path": "/home/me/run/resources/base_model"}))
    with pytest.raises(XtflowError, match=r"^out/config.json holds a path of this machine \(/home/me/run\)"):
        check_no_machine_paths(tmp_path, ["/home/me/run"], Path("out"))


def test_same_run_publishes_byte_identical_folders(completed_run: Path, tmp_path: Path, monkeypatch) -> None:
    """Publishing the same run again gives the same bytes, even from an adapter whose
    target_modules peft wrote in another order (it writes a set)."""
    from xtflow.publish import card_settings, publish
    from xtflow.settings import validate

    shuffled = tmp_path / "hf_adapter"
    shutil.copytree(completed_run / "results" / "hf_adapter", shuffled)
    config_path = shuffled / "adapter_config.json"
    adapter_config = json.loads(config_path.read_text(encoding="utf-8"))
    modules = sorted(adapter_config["target_modules"])
    adapter_config["target_modules"] = list(reversed(modules))
    config_path.write_text(json.dumps(adapter_config, indent=2), encoding="utf-8")

    monkeypatch.chdir(completed_run)
    inputs = publish_inputs(Path("results"), adapter=shuffled)
    config = validate(yaml.safe_load(Path("config/config.yaml").read_text(encoding="utf-8")))
    again = tmp_path / "again"
    publish(inputs, card_settings(config), again / "model", again / "adapter")
    for kind in ("model", "adapter"):
        first = completed_run / "results" / "publish" / kind
        assert names(first) == names(again / kind)
        for name in names(first):
            assert (first / name).read_bytes() == (again / kind / name).read_bytes(), f"{kind}/{name} differs"
    assert json.loads((again / "adapter" / "adapter_config.json").read_text())["target_modules"] == modules


def test_a_hub_base_model_is_named_by_its_id(completed_run: Path, tmp_path: Path, monkeypatch) -> None:
    """A base model from the hub (as rule download_model leaves it: a source record, the hub's README
    with its license): the cards name it by id, commit and license; the adapter's config by id."""
    from huggingface_hub import ModelCard

    from xtflow.publish import card_settings, publish
    from xtflow.settings import validate

    base = tmp_path / "base_model"
    shutil.copytree(completed_run / "resources" / "base_model", base)
    (base / "README.md").write_text("---\nlicense: apache-2.0\n---\n# the base model\n", encoding="utf-8")
    commit = "0123456789abcdef0123456789abcdef01234567"
    record = {"hub": "huggingface", "repo_id": "org/tiny-chat", "revision": "main", "commit": commit}
    (base / "xtflow_hub_source.json").write_text(json.dumps(record), encoding="utf-8")
    config = validate({"publish": {"base_model_id": "org/tiny-chat"}})
    monkeypatch.chdir(completed_run)
    inputs = publish_inputs(Path("results"), base_model=base)
    publish(inputs, card_settings(config), tmp_path / "model", tmp_path / "adapter")
    for kind in ("model", "adapter"):
        card = ModelCard.load(tmp_path / kind / "README.md")
        assert card.data.base_model == "org/tiny-chat" and card.data.license == "apache-2.0"
        assert f"[org/tiny-chat](https://huggingface.co/org/tiny-chat) at commit `{commit}`" in card.text
    adapter_config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text(encoding="utf-8"))
    assert adapter_config["base_model_name_or_path"] == "org/tiny-chat"
    assert json.loads((tmp_path / "model" / "config.json").read_text())["_name_or_path"] == "org/tiny-chat"
    assert 'base_id = "org/tiny-chat"' in (tmp_path / "adapter" / "README.md").read_text(encoding="utf-8")


def test_chat_template_prompts_as_xtuner_trained(completed_run: Path, tmp_path: Path) -> None:
    """Where the tokenizer's chat template renders another prompt than the training's (here: the
    tiny model's ChatML template against XTuner's `default` template), the completed_run one is replaced
    by a template that renders XTuner's; where it renders the same, it is kept."""
    from transformers import AutoTokenizer
    from xtuner.utils import PROMPT_TEMPLATE

    from xtflow.chat_model import render_prompt
    from xtflow.publish import write_tokenizer_config

    final = completed_run / "results" / "final_model"
    kept = json.loads((model_dir(completed_run) / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert kept["chat_template"] == json.loads((final / "tokenizer_config.json").read_text())["chat_template"]

    out = tmp_path / "tok"
    shutil.copytree(final, out)
    write_tokenizer_config(final, "default", out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Who are you?"},
    ]
    got = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    want = "<s>" + render_prompt(PROMPT_TEMPLATE["default"], "Be brief.", [("Hi", "Hello!")], "Who are you?")
    assert got == want


def test_generation_config_stops_at_the_templates_stop_token(completed_run: Path, tmp_path: Path) -> None:
    """A model whose generation config stops only at its EOS (as InternLM2's base configs do) is
    completed_run with the chat template's stop token (`<|im_end|>`) added."""
    from transformers import AutoTokenizer

    from xtflow.publish import write_generation_config

    model = tmp_path / "model"
    shutil.copytree(completed_run / "results" / "final_model", model)
    (model / "generation_config.json").write_text(json.dumps({"eos_token_id": 2, "bos_token_id": 1}))
    write_generation_config(model, "internlm2_chat", tmp_path)
    im_end = AutoTokenizer.from_pretrained(model).convert_tokens_to_ids("<|im_end|>")
    written = json.loads((tmp_path / "generation_config.json").read_text(encoding="utf-8"))
    assert written["eos_token_id"] == sorted({2, im_end}) and written["bos_token_id"] == 1


def test_license_comes_from_the_base_model(tmp_path: Path) -> None:
    from xtflow.errors import XtflowError
    from xtflow.model_card import license_of

    (tmp_path / "README.md").write_text("---\nlicense: other\nlicense_name: internlm\n---\n# base\n")
    assert license_of(tmp_path, None) == {"license": "other", "license_name": "internlm"}
    with pytest.raises(XtflowError, match=r"^config key 'publish.license': 'mit' differs from the base model's"):
        license_of(tmp_path, "mit")
    (tmp_path / "README.md").write_text("# no front matter\n")
    assert license_of(tmp_path, "mit") == {}


def test_base_model_hub_id() -> None:
    from xtflow.publish import base_model_hub_id
    from xtflow.settings import validate

    config = validate({})
    assert base_model_hub_id(config) is None  # the tiny default
    config["base_model"]["path"] = "hf:internlm/internlm2-chat-1_8b"  # a hub id (issue 14)
    assert base_model_hub_id(config) == "internlm/internlm2-chat-1_8b"
    config["base_model"]["path"] = "/models/internlm2-chat-1_8b"  # a local copy, named by the config
    assert base_model_hub_id(config) is None
    config["publish"]["base_model_id"] = "internlm/internlm2-chat-1_8b"
    assert base_model_hub_id(config) == "internlm/internlm2-chat-1_8b"


# -- push: git with LFS ----------------------------------------------------------------------------------


def test_git_route_pushes_weights_with_lfs(pushed: Path, tmp_path: Path) -> None:
    """`snakemake push` with hub git: a fresh clone of each remote, after `git lfs pull`, holds the
    published files byte for byte; the remote stores the weights as LFS objects."""
    record = json.loads((pushed / "results" / "publish" / "push.json").read_text(encoding="utf-8"))
    assert record["dry_run"] is False and [e["changed"] for e in record["pushed"]] == [True, True]
    config = yaml.safe_load((pushed / "config" / "config.yaml").read_text(encoding="utf-8"))
    for folder, url in (
        (model_dir(pushed), config["publish"]["repo_id"]),
        (adapter_dir(pushed), config["publish"]["adapter_repo_id"]),
    ):
        remote = Path(url.removeprefix("file://"))
        weights = sorted(folder.glob("*.safetensors"))
        lfs_objects = [p for p in (remote / "lfs" / "objects").rglob("*") if p.is_file()]
        assert len(lfs_objects) >= len(weights) > 0
        clone = tmp_path / folder.name
        git("clone", "-q", url, str(clone), env={"GIT_LFS_SKIP_SMUDGE": "1"})
        assert (clone / weights[0].name).read_bytes().startswith(LFS_POINTER)  # in git: a pointer
        git("lfs", "pull", cwd=clone)
        assert names(clone) == sorted(names(folder) + [".git", ".gitattributes"])
        for name in names(folder):
            assert (clone / name).read_bytes() == (folder / name).read_bytes(), name
        for weight in weights:
            assert not (clone / weight.name).read_bytes().startswith(LFS_POINTER)
        assert git("log", "-1", "--format=%H", cwd=clone).strip() == next(
            e["commit"] for e in record["pushed"] if e["folder"].endswith(folder.name)
        )
    # the adapter's remote had a hub-made first commit: its .gitattributes lines stay, its README is replaced
    adapter_clone = tmp_path / "adapter"
    assert "*.zip filter=lfs" in (adapter_clone / ".gitattributes").read_text(encoding="utf-8")
    assert "*.safetensors filter=lfs" in (adapter_clone / ".gitattributes").read_text(encoding="utf-8")
    assert "placeholder" not in (adapter_clone / "README.md").read_text(encoding="utf-8")
    # pushing unchanged folders again makes no commit
    from xtflow.push import push

    again = push(
        {**config["publish"], "private": True, "dry_run": False},
        model_dir(pushed),
        adapter_dir(pushed),
        tmp_path / "r.json",
    )
    assert [e["changed"] for e in again["pushed"]] == [False, False]


def test_git_remote_with_a_password_is_refused() -> None:
    from xtflow.errors import XtflowError
    from xtflow.settings import validate

    with pytest.raises(XtflowError, match=r"^config key 'publish.repo_id': the URL holds a password or token"):
        validate({"publish": {"hub": "git", "repo_id": "https://me:hf_secret@huggingface.co/me/xtbot"}})
    with pytest.raises(XtflowError, match=r"^config key 'publish.repo_id': 'me' is not a Hugging Face repository id"):
        validate({"publish": {"repo_id": "me"}})


# -- push: Hugging Face -----------------------------------------------------------------------------------


class Hub(BaseHTTPRequestHandler):
    """Stands in for the hub's address: records each request, answers 401."""

    requests: list[str] = []

    def _refuse(self) -> None:
        Hub.requests.append(f"{self.command} {self.path}")
        body = b'{"error": "Invalid credentials in Authorization header"}'
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_HEAD = _refuse

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """A recording stand-in for the hub, HF_ENDPOINT pointing at it, and no token anywhere."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    Hub.requests = []
    url = f"http://127.0.0.1:{server.server_port}"
    import huggingface_hub.constants as constants

    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf_home" / "token"))
    yield url
    server.shutdown()


def test_push_without_token_is_refused_before_anything_is_uploaded(pushed: Path, hub: str, tmp_path: Path) -> None:
    override = tmp_path / "huggingface.yaml"
    override.write_text(
        yaml.safe_dump({"publish": {"hub": "huggingface", "repo_id": "me/xtbot", "adapter_repo_id": None}})
    )
    proc = snakemake(pushed, "push", "--configfile", str(override))
    assert proc.returncode != 0
    errors = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "xtflow: error" in ln]
    assert errors == [
        "xtflow: error: no Hugging Face token: set HF_TOKEN in the environment or run `huggingface-cli login` "
        "(xtflow never reads a token from its config); nothing was uploaded"
    ]
    assert not re.search(r"^(?:local)?rule ", proc.stdout + proc.stderr, flags=re.M)  # refused before any job ran
    assert Hub.requests == []
    # the job itself refuses too (a push started some other way)
    from xtflow.errors import XtflowError
    from xtflow.push import push

    settings = {"hub": "huggingface", "repo_id": "me/xtbot", "adapter_repo_id": None, "private": True, "dry_run": False}
    with pytest.raises(XtflowError, match="^no Hugging Face token"):
        push(settings, model_dir(pushed), adapter_dir(pushed), tmp_path / "r.json")
    assert Hub.requests == [] and not (tmp_path / "r.json").exists()


def test_hub_refusal_is_one_line_without_the_token(
    completed_run: Path, hub: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    from xtflow.errors import XtflowError
    from xtflow.push import push

    token = "hf_xtflowTestTokenThatMustNeverAppear"
    monkeypatch.setenv("HF_TOKEN", token)
    settings = {"hub": "huggingface", "repo_id": "me/xtbot", "adapter_repo_id": None, "private": True, "dry_run": False}
    with pytest.raises(XtflowError) as refused:
        push(settings, model_dir(completed_run), adapter_dir(completed_run), tmp_path / "push.json")
    message = str(refused.value)
    assert "\n" not in message and message.startswith("upload of ") and "401" in message
    assert token not in message and token not in "".join(capsys.readouterr())
    assert Hub.requests and Hub.requests[0].startswith("POST /api/repos/create")
    assert not (tmp_path / "push.json").exists()


def test_dry_run_lists_what_would_be_uploaded(completed_run: Path, hub: str, tmp_path: Path) -> None:
    from xtflow.push import push, sha256

    settings = {
        "hub": "huggingface",
        "repo_id": "me/xtbot",
        "adapter_repo_id": "me/xtbot-lora",
        "private": True,
        "dry_run": True,
    }
    record = push(settings, model_dir(completed_run), adapter_dir(completed_run), tmp_path / "push.json")
    assert Hub.requests == []
    assert json.loads((tmp_path / "push.json").read_text(encoding="utf-8")) == record
    assert record["token"] == "none: a real push would be refused"
    model = next(e for e in record["pushed"] if e["repository"] == "me/xtbot")
    files = {f["path"]: f for f in model["files"]}
    assert sorted(files) == names(model_dir(completed_run))
    assert files["model.safetensors"]["lfs"] and not files["config.json"]["lfs"]
    assert files["model.safetensors"]["sha256"] == sha256(model_dir(completed_run) / "model.safetensors")
