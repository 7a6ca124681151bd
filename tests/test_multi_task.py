"""Multi-task heads (issue 7): token classification and QA heads, entity F1, the tweet NER
build, and the multi_task method (routing, per-task adapters, identical per-task budget)."""

from __future__ import annotations

import copy
import json
import random

import pytest
import torch
import yaml
from pydantic import ValidationError

from harness.config.schema import Budget
from harness.data.encoding import IGNORE, align_labels, answer_span, encode_pairs, encode_words
from harness.data.order import example_order, order_digest
from harness.data.prepared import build_ner, read_conll
from harness.eval import metrics
from harness.methods import ArmContext, get_method
from harness.training import get_objective
from harness.training.multi_task_objective import TaskData
from harness.training.multi_task_objective import train as train_multi

TAGS = ["O", "B-person", "I-person", "B-geo-loc", "I-geo-loc"]
BUDGET = Budget(
    **{
        "max_steps": 2,
        "batch_size": 4,
        "grad_accum": 1,
        "max_seq_len": 32,
        "seed": 0,
        "lr_schedule": "linear",
        "warmup_ratio": 0.0,
        "weight_decay": 0.0,
        "max_grad_norm": 1.0,
    }
)


def ner_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        subject = rng.choice([["john", "smith"], ["mary"]])
        place = rng.choice([["paris"], ["new", "york"]])
        tokens = ["the", "movie", "with"] + subject + ["was", "great", "in"] + place
        tags = (
            ["O", "O", "O", "B-person"]
            + ["I-person"] * (len(subject) - 1)
            + ["O", "O", "O", "B-geo-loc"]
            + ["I-geo-loc"] * (len(place) - 1)
        )
        rows.append({"id": f"n{seed}-{i}", "tokens": tokens, "tags": tags, "text": " ".join(tokens)})
    return rows


def qa_rows(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        word = ["great", "boring", "good", "dull"][i % 4]
        context = f"the movie was {word} and the cast was fun"
        rows.append(
            {
                "id": f"q{i}",
                "question": "how was the movie?",
                "context": context,
                "answer": word,
                "answer_start": context.index(word),
            }
        )
    return rows


def cls_rows(n: int) -> list[dict]:
    return [
        {
            "id": f"c{i}",
            "text": f"the film was {'great' if i % 2 else 'bad'}",
            "label": "positive" if i % 2 else "negative",
        }
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def tokenizer(tiny_models):
    from harness.models import load_tokenizer

    return load_tokenizer(tiny_models["bert"])


def wrapped(tiny_models, adapters="none", tasks=None, **params):
    from harness.models import load_model

    method = get_method("multi_task")
    tasks = tasks or {
        "sent": {"type": "classification", "num_labels": 2},
        "ner": {"type": "token_classification", "num_labels": len(TAGS)},
        "qa": {"type": "extractive_qa", "num_labels": None},
    }
    encoder = load_model(tiny_models["bert"], "encoder", dtype="float32")
    ctx = ArmContext(kind="encoder", task_type="multi_task", model_type="bert", device="cpu", seed=0, tasks=tasks)
    torch.manual_seed(0)
    return method.wrap(encoder, method.Params(adapters=adapters, target_modules=["query", "value"], **params), ctx)


def batches(tokenizer):
    ner = {"type": "token_classification", "labels": TAGS}
    sent = {"type": "classification", "labels": ["negative", "positive"]}
    make = {
        "ner": get_objective("token_classification").batcher(tokenizer, ner_rows(4, 0), ner, BUDGET),
        "sent": get_objective("classification").batcher(tokenizer, cls_rows(4), sent, BUDGET),
        "qa": get_objective("extractive_qa").batcher(tokenizer, qa_rows(4), {"type": "extractive_qa"}, BUDGET),
    }
    return {k: m([0, 1, 2, 3])[0] for k, m in make.items()}


# ------------------------------------------------------------------ heads, alignment, metrics


def test_labels_go_on_the_first_subtoken_only(tokenizer):
    ids = {t: i for i, t in enumerate(TAGS)}
    assert align_labels([None, 0, 1, 1, 2, None], ["B-person", "I-person", "O"], ids) == [
        IGNORE,
        1,
        2,
        IGNORE,
        0,
        IGNORE,
    ]
    words, tags = ["john", "wonderfulness", "paris"], ["B-person", "O", "B-geo-loc"]
    enc = encode_words(tokenizer, [words], 32)
    word_ids = enc.word_ids(0)
    assert word_ids.count(1) > 1, "the made-up word should split into several sub-tokens"
    labels = align_labels(word_ids, tags, ids)
    kept = [(w, label) for w, label in zip(word_ids, labels) if label != IGNORE]
    assert kept == [(0, ids["B-person"]), (1, ids["O"]), (2, ids["B-geo-loc"])]


def test_entity_f1_on_a_hand_computed_case():
    gold = [["B-person", "I-person", "O", "B-geo-loc"], ["B-company", "O"]]
    pred = [["B-person", "O", "O", "B-geo-loc"], ["O", "O"]]
    # gold: 3 entities; predicted: person[0:0] (wrong span) and geo-loc (right): 1 correct of 2 predicted
    values, _ = metrics.score_items("token_classification", metrics.Items(pred, gold))
    assert values["entity_precision"] == pytest.approx(1 / 2, abs=1e-6)
    assert values["entity_recall"] == pytest.approx(1 / 3, abs=1e-6)
    assert values["entity_f1"] == pytest.approx(2 * 1 / (2 + 3), abs=1e-6)
    from harness.eval.ner_metrics import seqeval_f1

    assert seqeval_f1(pred, gold) == pytest.approx(0.4)  # seqeval itself agrees with the per-item rows
    assert metrics.primary_metric("token_classification") == "entity_f1"
    assert metrics.METRICS["entity_f1"].higher_is_better


def test_answer_span_points_at_the_answer_tokens(tokenizer):
    example = qa_rows(1)[0]
    enc = encode_pairs(tokenizer, [example], 64)
    start, end = answer_span(
        enc.sequence_ids(0),
        enc["offset_mapping"][0].tolist(),
        example["answer_start"],
        example["answer_start"] + len(example["answer"]),
    )
    assert 0 < start <= end
    assert tokenizer.decode(enc["input_ids"][0][start : end + 1]).replace(" ", "") == example["answer"]
    assert answer_span(enc.sequence_ids(0), enc["offset_mapping"][0].tolist(), 500, 505) == (0, 0)


# ------------------------------------------------------------------ the NER dataset

FAKE_NER = (
    "@paul\tO\nEmpire\tB-facility\nState\tI-facility\n.\tO\n\t\n"
    "Ian\tB-person\nrocks\tO\r\n\nI\tO\nlove\tO\nNYC\tB-geo-loc\n\t\n"
    + "".join(f"w{i}\tO\nx{i}\tB-other\ny{i}\tI-other\n\n" for i in range(7))
)


def test_ner_build_on_a_tiny_fake_source(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "ner.txt").write_text(FAKE_NER)
    assert read_conll(FAKE_NER)[1] == (["Ian", "rocks"], ["B-person", "O"])  # \r stripped
    first, second = build_ner(tmp_path), build_ner(tmp_path)
    assert first == second
    assert {k: len(v) for k, v in first.items()} == {"train": 8, "validation": 1, "test": 1}
    records = {r["id"]: r for split in first.values() for r in split}
    assert len(records) == 10
    assert records["tweet-0000"]["tags"] == ["O", "B-facility", "I-facility", "O"]
    assert records["tweet-0000"]["text"] == "@paul Empire State ."
    assert all(len(r["tokens"]) == len(r["tags"]) for r in records.values())


# ------------------------------------------------------------------ the multi-task model


def test_each_batch_reaches_only_its_own_head(tiny_models, tokenizer):
    model = wrapped(tiny_models)
    calls = []
    for key, head in model.heads.items():
        head.register_forward_hook(lambda module, args, out, key=key: calls.append(key))
    data = batches(tokenizer)
    for key in ("ner", "sent", "qa"):
        calls.clear()
        model.zero_grad(set_to_none=True)
        out = model(task=key, **copy.deepcopy(data[key]))
        out.loss.backward()
        assert calls == [key]
        for other, head in model.heads.items():
            grads = [p.grad for p in head.parameters()]
            if other == key:
                assert all(g is not None and g.abs().sum() > 0 for g in grads)
            else:
                assert all(g is None for g in grads), f"a {key} batch reached the {other} head"
        assert any(p.grad is not None for p in model.encoder.parameters())  # the shared encoder trains
    assert model.for_task("ner")(**{k: v for k, v in data["ner"].items() if k != "labels"}).logits.shape[-1] == len(
        TAGS
    )


def test_per_task_adapters_leave_the_encoder_and_other_tasks_alone(tiny_models, tokenizer):
    model = wrapped(
        tiny_models,
        adapters="per_task",
        tasks={
            "sent": {"type": "classification", "num_labels": 2},
            "ner": {"type": "token_classification", "num_labels": len(TAGS)},
        },
    )
    snapshot = {n: p.detach().clone() for n, p in model.named_parameters()}
    data = batches(tokenizer)
    optimizer = torch.optim.AdamW(model.param_groups(1e-2, 1e-2))
    model.train()
    model(task="ner", **copy.deepcopy(data["ner"])).loss.backward()
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, snapshot[n])}
    assert changed, "the NER step changed nothing"
    assert all(".ner." in n or n.startswith("heads.ner.") for n in changed), sorted(changed)[:5]
    assert any("lora_B.ner" in n for n in changed) and any(n.startswith("heads.ner.") for n in changed)
    optimizer.zero_grad(set_to_none=True)
    model(task="sent", **copy.deepcopy(data["sent"])).loss.backward()
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, snapshot[n])}
    base = [n for n in snapshot if "lora_" not in n and not n.startswith("heads.")]
    assert base and not any(n in changed for n in base), "the frozen encoder changed"
    assert any("lora_B.sent" in n for n in changed)


def test_each_task_trains_on_exactly_its_single_task_order(tiny_models, tokenizer):
    from harness.models import load_model

    ner_task, sent_task = (
        {"type": "token_classification", "labels": TAGS},
        {"type": "classification", "labels": ["negative", "positive"]},
    )
    ner_train, sent_train = ner_rows(6, 1), cls_rows(10)
    budget = BUDGET.model_copy(update={"max_steps": 3})
    single = load_model(
        tiny_models["bert"], "encoder", num_labels=len(TAGS), head_class="AutoModelForTokenClassification"
    )
    alone, _ = get_objective("token_classification").train(single, tokenizer, ner_train, ner_task, budget, 1e-3)
    model = wrapped(
        tiny_models,
        tasks={
            "sent": {"type": "classification", "num_labels": 2},
            "ner": {"type": "token_classification", "num_labels": len(TAGS)},
        },
    )
    data = {
        "sent": TaskData(
            get_objective("classification").batcher(tokenizer, sent_train, sent_task, budget),
            [e["id"] for e in sent_train],
        ),
        "ner": TaskData(
            get_objective("token_classification").batcher(tokenizer, ner_train, ner_task, budget),
            [e["id"] for e in ner_train],
        ),
    }
    seen = []
    consumed, curves = train_multi(
        model,
        data,
        budget,
        lr=1e-3,
        head_lr=1e-3,
        loss_weights={"ner": 2.0},
        on_step=lambda step, total, loss: seen.append((step, total)),
    )
    assert seen[-1] == (6, 6)  # n_tasks x max_steps optimizer steps
    ner = consumed["ner"]
    assert (ner.steps, ner.examples, ner.tokens, ner.order_hash) == (
        alone.steps,
        alone.examples,
        alone.tokens,
        alone.order_hash,
    )
    expected = order_digest([sent_train[i]["id"] for i in example_order(10, 12, 0)])
    assert consumed["sent"].order_hash == expected != ner.order_hash
    assert len(curves["sent"]) == len(curves["ner"]) == 3


# ------------------------------------------------------------------ plan and runner


def multi_experiment(tiny_models, tiny_data, tmp_path) -> dict:
    from tests.conftest import experiment_dict

    for split, n, seed in (("train", 24, 3), ("test", 6, 4)):
        (tmp_path / f"ner_{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ner_rows(n, seed)))
    data = experiment_dict(
        tiny_models,
        tiny_data,
        [
            {"method": "full_ft", "model": "bert", "task": "ner", "lr": 1e-3},
            {
                "method": "multi_task",
                "model": "bert",
                "name": "mt adapters",
                "lr": 1e-3,
                "params": {"adapters": "per_task", "target_modules": ["query", "value"], "loss_weights": {"ner": 2.0}},
            },
        ],
        budget={"eval_examples": 6, "latency_examples": 1, "bootstrap_resamples": 20},
    )
    data["tasks"]["ner"] = {
        "type": "token_classification",
        "labels": TAGS,
        "data": {"train": str(tmp_path / "ner_train.jsonl"), "test": str(tmp_path / "ner_test.jsonl")},
    }
    path = tmp_path / "mt.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_plan_makes_one_arm_over_all_tasks_and_counts_it_on_meta(tiny_models, tiny_data, tmp_path):
    from harness.planning.estimate import estimate_arms
    from harness.planning.experiment_loader import load_experiment
    from harness.planning.plan import plan

    experiment = load_experiment(multi_experiment(tiny_models, tiny_data, tmp_path))
    arms = plan(experiment)
    assert [(a.method, a.task_key) for a in arms] == [("full_ft", "ner"), ("multi_task", "sentiment+ner")]
    assert list(arms[1].tasks) == ["sentiment", "ner"]
    estimates = estimate_arms(experiment)
    assert 0 < estimates[1].trainable < estimates[1].total  # adapters + heads only


def test_a_multi_task_arm_reports_per_task_metrics(tiny_models, tiny_data, tmp_path):
    from tests.test_runner import results_of, run_cli

    result = run_cli(multi_experiment(tiny_models, tiny_data, tmp_path), "--no-track", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    run_dir, results = results_of(tmp_path)
    rows = {(a["arm"]["name"], a["arm"]["task_key"]): a for a in results["arms"]}
    assert set(rows) == {
        ("full_ft · bert · ner", "ner"),
        ("mt adapters · sentiment", "sentiment"),
        ("mt adapters · ner", "ner"),
    }, [a.get("error") for a in results["arms"]]
    assert all(a["status"] == "ok" for a in results["arms"])
    ner, sent = rows["mt adapters · ner", "ner"], rows["mt adapters · sentiment", "sentiment"]
    assert {"entity_f1", "entity_precision", "tag_accuracy"} <= set(ner["metrics"]) and "accuracy" not in ner["metrics"]
    assert "accuracy" in sent["metrics"] and "entity_f1" not in sent["metrics"]
    assert (run_dir / "arms" / ner["arm"]["slug"] / "predictions.jsonl").is_file()
    # same examples in the same order as the single-task NER arm: the audit finds nothing
    assert ner["consumed"]["order_hash"] == rows["full_ft · bert · ner", "ner"]["consumed"]["order_hash"]
    assert results["budget_audit"]["identical"], results["budget_audit"]
    assert any({c["a"], c["b"]} == {"full_ft · bert · ner", "mt adapters · ner"} for c in results["comparisons"])


def test_bad_multi_task_params_are_clear_errors(tiny_models):
    from harness.errors import HarnessError

    with pytest.raises(HarnessError, match="no head for the task"):
        wrapped(tiny_models, tasks={"summary": {"type": "generation", "num_labels": None}})
    # the arm's params are checked at `harness validate` (tests/test_plugin_params.py); a wrap
    # outside a plan still refuses them
    with pytest.raises(ValidationError, match="'nope' is not a task of this arm"):
        wrapped(tiny_models, loss_weights={"nope": 2.0})
    with pytest.raises(ValidationError, match="'none' or 'per_task'"):
        wrapped(tiny_models, adapters="shared")


def test_a_multi_task_arm_is_evaluated_in_eval_precision_and_scored_on_golden_sets(
    tiny_models, tiny_data, tmp_path, monkeypatch
):
    """Its hash names eval_precision and the golden sets (planning.plan): the arm must really
    evaluate in that precision and score every task's head on the sets, as a single-task arm does."""
    from harness.execution.multi_task_arm import execute_multi_task
    from harness.methods.multi_task_model import MultiTaskModel
    from harness.planning.experiment_loader import load_experiment
    from harness.planning.plan import plan

    golden = tmp_path / "mood.yaml"
    golden.write_text(
        yaml.safe_dump(
            {
                "name": "mood",
                "task": "classification",
                "version": "1",
                "labels": ["negative", "positive"],
                "items": [
                    {"id": "a", "input": "the film was great", "expect": {"label": "positive"}},
                    {"id": "b", "input": "the film was awful", "expect": {"label": "negative"}},
                ],
            }
        )
    )
    path = multi_experiment(tiny_models, tiny_data, tmp_path)
    data = yaml.safe_load(path.read_text())
    data["arms"] = data["arms"][1:]  # the multi-task arm alone
    data["budget"]["eval_precision"] = "bf16"
    data["golden_sets"] = [str(golden)]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    (arm,) = plan(load_experiment(path))
    assert arm.budget.eval_precision == "bf16" and arm.golden_sets == [str(golden.resolve())]

    seen = []  # (inference mode, dtype of the encoder) of every forward of the multi-task model
    forward = MultiTaskModel.forward

    def spy(self, task, **batch):
        seen.append((torch.is_inference_mode_enabled(), next(self.encoder.parameters()).dtype))
        return forward(self, task, **batch)

    monkeypatch.setattr(MultiTaskModel, "forward", spy)
    summary = execute_multi_task(arm, tmp_path / "arm")
    assert summary.status == "ok"
    training = [dtype for inference, dtype in seen if not inference]
    evaluation = [dtype for inference, dtype in seen if inference]
    assert training and set(training) == {torch.float32}  # trains in fp32 (budget.precision auto on CPU)
    assert evaluation and set(evaluation) == {torch.bfloat16}, set(evaluation)
    results = {key: json.loads((tmp_path / "arm" / "tasks" / key / "result.json").read_text()) for key in arm.tasks}
    for key, result in results.items():
        assert result["provenance"]["eval_precision"] == "bf16", key
        assert set(result["golden"]) == {"mood"}, key
    mood = results["sentiment"]["golden"]["mood"]  # the sentiment head names one of the set's labels
    assert mood["total"] == 2 and "error" not in mood and {r["id"] for r in mood["items"]} == {"a", "b"}
    # a token-classification head cannot answer a label assertion: recorded in the entry, as for
    # a single-task NER arm, and the arm goes on
    assert "error" in results["ner"]["golden"]["mood"], results["ner"]["golden"]["mood"]
