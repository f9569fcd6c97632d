"""Evaluation stage: held-out identity, over-triggering, language and general answers, on single
questions and in conversations, with intervals, base vs final model."""

from __future__ import annotations

import csv
import itertools
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import REPO, completed_config, planned_jobs, snakemake, write_config
from xtflow.errors import XtflowError
from xtflow.evaluate import (
    PROBE_FILES,
    PROBES,
    SIMILAR,
    Judged,
    Turn,
    is_identity_reply,
    language,
    load_conversations,
    load_probes,
    read_summary,
    similarity,
    wilson,
    write_replies,
)
from xtflow.general_set import general_qa


def shipped_probes():
    return load_probes(*(PROBES / PROBE_FILES[k] for k in ("identity", "unrelated", "general", "conversations")))


def training_questions() -> list[str]:
    """Every question any shipped recipe trains on: config dataset.questions, the general set and
    the tutorial recipe's question."""
    config = completed_config()["dataset"]["questions"]
    tutorial = yaml.safe_load((REPO / "workflow/xtflow/recipes/tutorial.yaml").read_text(encoding="utf-8"))
    return (
        config["en"]
        + config["zh"]
        + tutorial["dataset"]["questions"]["zh"]
        + tutorial["dataset"]["questions"]["en"]
        + [x.question for x in general_qa()]
    )


@pytest.fixture(scope="module")
def evaluated(completed_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("eval") / "run"
    shutil.copytree(completed_run, run, symlinks=True)
    snakemake(run, "results/eval/summary.csv", check=True)
    return run


def test_probe_sets_are_large_bilingual_and_varied() -> None:
    probes = shipped_probes()
    for turns, least, sections in ((probes.identity, 60, 5), (probes.unrelated, 150, 10)):
        assert len(turns) >= least
        for lang in ("en", "zh"):
            assert sum(language(t.question) == lang for t in turns) >= least // 3
        assert len({t.section for t in turns}) >= sections and all(t.section for t in turns)
    assert {"Which model are you?", "Who owns you?", "你是ChatGPT吗？"} <= {t.question for t in probes.identity}


def test_probes_are_no_near_duplicates_of_training_questions_or_of_each_other() -> None:
    """The measure the evaluation uses for "the same text" (rapidfuzz ratio, lower-cased, no
    punctuation, SIMILAR or more)."""
    probes = shipped_probes()
    asked = [t.question for t in probes.identity + probes.unrelated]
    trained = training_questions()
    near_trained = [(q, t) for q in asked for t in trained if similarity(q, t) >= SIMILAR]
    assert not near_trained
    near_each_other = [(a, b) for a, b in itertools.combinations(asked, 2) if similarity(a, b) >= SIMILAR]
    assert not near_each_other


def test_conversations_reuse_the_single_probes_in_both_orders() -> None:
    probes = shipped_probes()
    single = {
        "identity": {t.question for t in probes.identity},
        "unrelated": {t.question for t in probes.unrelated},
        "general": {(t.question, t.reference) for t in probes.general},
    }
    for conv in probes.conversations:
        for t in conv:
            assert (
                (t.question, t.reference) in single["general"] if t.kind == "general" else t.question in single[t.kind]
            )
    kinds = [[t.kind for t in c] for c in probes.conversations]
    assert sum(k[0] == "identity" for k in kinds) >= 40 and sum(k[-1] == "identity" for k in kinds) >= 40
    after = [t for c in probes.conversations for t in c[1:]]
    assert sum(t.kind == "unrelated" for t in after) >= 80 and sum(t.kind == "identity" for t in after) >= 40


def test_wilson_interval() -> None:
    # Wilson's score interval, by hand: (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)
    z = 1.959963984540054
    for k, n in ((0, 60), (3, 150), (57, 60), (60, 60)):
        p = k / n
        centre, half = p + z * z / (2 * n), z * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5
        low, high = wilson(k, n)
        assert low == pytest.approx((centre - half) / (1 + z * z / n), abs=1e-9)
        assert high == pytest.approx((centre + half) / (1 + z * z / n), abs=1e-9)
    assert wilson(0, 150)[1] == pytest.approx(0.0250, abs=1e-4)
    assert all(v != v for v in wilson(0, 0))


def test_language_of_a_text() -> None:
    assert language("我是XtBot，由the xtflow team打造的人工智能助手。") == "zh"
    assert language("I am XtBot, an AI assistant made by the xtflow team.") == "en"
    assert language("cat in Chinese is 猫.") == "en"
    assert language("JavaScript和Java有什么区别？") == "zh"
    assert language("你是ChatGPT吗？") == "zh"
    assert language("42") == language("") == ""


def test_identity_reply_detection() -> None:
    answers = ["I am XtBot, an AI assistant made by the xtflow team."]
    assert is_identity_reply("i am xtbot!", "XtBot", answers)
    assert is_identity_reply("I am , an AI assistant made by the xtflow team.", "XtBot", answers)
    assert not is_identity_reply("The capital of France is Paris.", "XtBot", answers)
    # what the tutorial recipe's model says: the identity sentence, garbled, in place of an answer
    zh = ["我是XtBot，由the xtflow team打造的人工智能助手。有什么可以帮你的吗？"]
    assert is_identity_reply("The capital ofam team打造的人工智能�你的吗？", "XtBot", zh)
    assert not is_identity_reply("法国的首都是巴黎。", "XtBot", zh)
    # a stretch the question itself holds does not count
    assert not is_identity_reply("the xtflow team is a team.", "XtBot", answers, "Who is the xtflow team?")


def test_bad_probe_files_are_named(tmp_path: Path) -> None:
    bad = tmp_path / "general.tsv"
    bad.write_text("What is 2 plus 3? 5\n", encoding="utf-8")
    paths = [PROBES / PROBE_FILES[k] for k in ("identity", "unrelated", "general", "conversations")]
    with pytest.raises(XtflowError, match=r"general.tsv: line 1 is not 'question<TAB>reference'"):
        load_probes(paths[0], paths[1], bad, paths[3])
    conv = tmp_path / "conversations.tsv"
    conv.write_text("# x\nidentity\tWho are you?\n\nquestion\tWhat is 2 plus 3?\n", encoding="utf-8")
    with pytest.raises(XtflowError, match=r"conversations.tsv: line 4: kind 'question' is not one of"):
        load_conversations(conv)
    conv.write_text("identity\tWho are you?\ngeneral\tWhat is 2 plus 3?\n", encoding="utf-8")
    with pytest.raises(XtflowError, match=r"conversations.tsv: line 2 is not 'question<TAB>reference'"):
        load_conversations(conv)
    conv.write_text("identity\tWho are you?\nunrelated\tWhy?\n\n\nunrelated\tHow?\n", encoding="utf-8")
    assert [[t.kind for t in c] for c in load_conversations(conv)] == [["identity", "unrelated"], ["unrelated"]]


def test_retention_against_references_or_the_base_models_own_replies() -> None:
    from xtflow.evaluate import retention

    kept = retention([True, True, False, True], [True, False, True, True], [], [], "reference")
    assert (kept.k, kept.n) == (2, 3)
    base = ["Paris is the capital of France.", "2 plus 3 is 5.", "Grass is green."]
    final = ["Paris is the capital of France!", "I am XtBot, an AI assistant.", "Grass is green."]
    same = retention([], [], base, final, "base_reply")
    assert (same.k, same.n) == (2, 3)


def test_summary_scores_base_and_final_with_intervals(evaluated: Path) -> None:
    summary = read_summary(evaluated / "results" / "eval" / "summary.csv")
    probes = shipped_probes()
    for model in ("base", "final"):
        for setting in ("single", "conversation"):
            for metric in ("identity_accuracy", "identity_in_language", "over_trigger_rate", "language_consistency"):
                row = summary[(model, setting, metric)]
                assert row["low"] <= row["value"] <= row["high"]
                assert (row["low"], row["high"]) == pytest.approx(wilson(int(row["k"]), int(row["n"])), abs=1e-4)
        assert summary[(model, "single", "over_trigger_rate")]["n"] == len(probes.unrelated)
        assert summary[(model, "single", "identity_accuracy")]["n"] == len(probes.identity)
        after = [t for c in probes.conversations for t in c[1:]]
        assert summary[(model, "conversation", "identity_accuracy")]["n"] == sum(t.kind == "identity" for t in after)
    # the untrained base model never says the name; the fine-tuned one does on questions it never saw
    assert summary[("base", "single", "identity_accuracy")]["value"] == 0.0
    assert summary[("final", "single", "identity_accuracy")]["value"] > 0.0
    assert (
        summary[("final", "single", "identity_in_language")]["value"]
        <= summary[("final", "single", "identity_accuracy")]["value"]
    )
    assert ("final", "single", "retention") in summary
    replies = list(csv.DictReader((evaluated / "results" / "eval" / "replies.csv").open(encoding="utf-8")))
    per_model = len(probes.identity) + len(probes.unrelated) + len(probes.general)
    per_model += sum(len(c) for c in probes.conversations)
    assert len(replies) == 2 * per_model


def test_conversation_turns_are_asked_with_the_runs_template_and_history(completed_run: Path) -> None:
    """A batch of turns with histories gets exactly the replies the chat gives one by one."""
    from xtflow.chat_model import ChatModel, RunSettings, Sampling

    model = ChatModel(completed_run / "results" / "final_model", RunSettings("internlm2_chat", ""), device="cpu")
    histories = [[("你是谁？", "我是XtBot。")], [], [("Who are you?", "I am XtBot."), ("2加3等于多少？", "5")]]
    questions = ["What is the capital of France?", "What is the capital of France?", "法国的首都是哪里？"]
    batch = model.reply_batch(questions, 24, histories=histories)
    greedy = Sampling(temperature=0.0, max_new_tokens=24)
    one_by_one = [model.reply(h, q, greedy) for h, q in zip(histories, questions)]
    assert batch == one_by_one
    assert "<|im_start|>user\n你是谁？<|im_end|>\n<|im_start|>assistant\n我是XtBot。<|im_end|>\n" in model.prompt(
        histories[0], questions[0]
    )


def test_changing_only_the_probes_reruns_only_evaluate(evaluated: Path, tmp_path: Path) -> None:
    probe = tmp_path / "conversations.tsv"
    probe.write_text("identity\tWhat is your name, please?\nunrelated\tWhy is the sky blue?\n", encoding="utf-8")
    config = completed_config()
    config["evaluation"] = {"conversations": str(probe)}
    write_config(evaluated, config)
    proc = snakemake(evaluated, "-n", "results/eval/summary.csv", check=True)
    assert planned_jobs(proc.stdout) == {"evaluate"}


def test_replies_page_puts_base_and_final_side_by_side_failures_first(tmp_path: Path) -> None:
    from xtflow.report import replies_page

    fields = ["model", "set", "conversation", "turn", "kind", "section", "question", "reference", "reply"]
    fields += ["correct", "in_language"]
    rows = [
        ["base", "general", "", "1", "general", "", "What is 2 plus 3?", "5", "2 plus 3 is 5.", "1", "1"],
        ["final", "general", "", "1", "general", "", "What is 2 plus 3?", "5", "2 plus 3 is 5.", "1", "1"],
        ["base", "identity", "", "1", "identity", "s", "Who owns you?", "", "Paris.", "0", "1"],
        ["final", "identity", "", "1", "identity", "s", "Who owns you?", "", "我是XtBot。", "1", "0"],
        ["base", "conversation", "3", "1", "identity", "", "你是谁呀？", "", "巴黎。", "0", "1"],
        ["final", "conversation", "3", "1", "identity", "", "你是谁呀？", "", "我是XtBot。", "1", "1"],
        ["base", "conversation", "3", "2", "unrelated", "", "Why is ice cold?", "", "Ice is cold.", "1", "1"],
        ["final", "conversation", "3", "2", "unrelated", "", "Why is ice cold?", "", "I am XtBot.", "0", "1"],
    ]
    replies = tmp_path / "replies.csv"
    with replies.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([fields, *rows])
    assert replies_page(replies, tmp_path / "replies.html") == 2
    page = (tmp_path / "replies.html").read_text(encoding="utf-8")
    final_fails = max(page.index("Why is ice cold?&gt;</td>"), page.index("Who owns you?"))
    # the final model's failures first, then those of the base model only, then the rest
    assert final_fails < page.index("你是谁呀？</td>") < page.index("What is 2 plus 3?")
    assert "<td>Ice is cold.</td><td>ok</td><td>I am XtBot.</td><td>over-trigger</td>" in page
    assert "<td>Paris.</td><td>no name</td><td>我是XtBot。</td><td>wrong language</td>" in page
    assert "你是谁呀？ → &lt;Why is ice cold?&gt;" in page  # a turn shows what it was asked after


def test_replies_with_control_characters_survive_the_csv(tmp_path: Path) -> None:
    """A random or half-trained model's reply can hold a bare carriage return (seen in a real run)."""
    from xtflow.report import replies_page

    reply = "oem\ufffd\ufffd上 abou\rsecommen^ bo，x"  # no comma, quote or newline that would force quotes
    probe = Turn("general", "What is 6 km in metres?", "6000")
    judged = [Judged(m, "general", 0, 1, probe, reply, False, False) for m in ("base", "final")]
    write_replies(judged, tmp_path / "replies.csv")
    with (tmp_path / "replies.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["model"], r["reply"]) for r in rows] == [("base", reply), ("final", reply)]
    assert replies_page(tmp_path / "replies.csv", tmp_path / "replies.html") == 1


def test_harness_runs_lm_eval_or_says_it_is_not_installed(evaluated: Path, tmp_path: Path) -> None:
    """evaluation.harness: lm-eval's tasks base vs final where lm-eval is installed; where it is not
    (CI), one line in the log and a file that holds no scores."""
    import json

    from xtflow.harness import installed_version

    task_dir = tmp_path / "tasks"
    task_dir.mkdir()
    data = task_dir / "general_mc.jsonl"
    qa = general_qa()[:16:2]  # English capitals and sums
    data.write_text(
        "".join(
            json.dumps({"question": x.question, "choices": [x.reference, "Oslo", "7", "blue"], "label": 0}) + "\n"
            for x in qa
        ),
        encoding="utf-8",
    )
    (task_dir / "general_mc.yaml").write_text(
        yaml.safe_dump(
            {
                "task": "xtflow_general_mc",
                "dataset_path": "json",
                "dataset_kwargs": {"data_files": {"test": str(data)}},
                "test_split": "test",
                "output_type": "multiple_choice",
                "doc_to_text": "Question: {{question}}\nAnswer:",
                "doc_to_choice": "{{choices}}",
                "doc_to_target": "{{label}}",
                "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
            }
        ),
        encoding="utf-8",
    )
    config = completed_config()
    config["evaluation"]["harness"] = {"tasks": ["xtflow_general_mc"], "limit": 8, "include_path": str(task_dir)}
    write_config(evaluated, config)
    try:
        snakemake(evaluated, "results/eval/harness.json", check=True)
    finally:
        write_config(evaluated, completed_config())
    result = json.loads((evaluated / "results" / "eval" / "harness.json").read_text(encoding="utf-8"))
    log = (evaluated / "logs" / "harness.log").read_text(encoding="utf-8")
    if installed_version() is None:
        assert result == {
            "harness": "lm-eval",
            "limit": 8,
            "scores": {},
            "status": "not installed",
            "tasks": ["xtflow_general_mc"],
        }
        lines = [ln for ln in log.splitlines() if "lm-eval" in ln]
        assert lines == [
            "xtflow: evaluation.harness: lm-eval is not installed (pip install 'lm-eval[hf]'); nothing was run"
        ]
    else:
        assert result["status"] == "ok"
        for model in ("base", "final"):
            assert 0.0 <= result["scores"][model]["xtflow_general_mc"]["acc,none"] <= 1.0
