"""Continual pretraining (the cpt stage), its corpora and domain perplexity, on the tiny decoder."""

from __future__ import annotations

import json
import math

import pytest

from harness.data.corpus import load_documents, pack
from harness.errors import HarnessError
from tests.test_runner import results_of, run_cli


def test_pack_concatenates_documents_with_eos_into_full_blocks(tiny_models):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_models["llama"])
    docs = ["the film was great.", "the plot is dull", "i think the cast is so fun"]
    stream = [t for d in docs for t in tok(d, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]]
    blocks = pack(tok, docs, 5)
    assert blocks.tolist() == [stream[i : i + 5] for i in range(0, len(stream) // 5 * 5, 5)]
    assert blocks.shape[1] == 5 and tok.pad_token_id not in blocks


def test_documents_from_txt_jsonl_and_folder(tmp_path):
    (tmp_path / "a.txt").write_text("one\n\ntwo\n\n\n")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "x"}) + "\n" + json.dumps({"text": "y"}) + "\n")
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "2.txt").write_text("second")
    (folder / "1.txt").write_text("first\n")
    assert load_documents("a.txt", tmp_path) == ["one", "two"]
    assert load_documents(str(tmp_path / "b.jsonl")) == ["x", "y"]
    assert load_documents("docs", tmp_path) == ["first", "second"]
    with pytest.raises(HarnessError, match="not found"):
        load_documents("missing.txt", tmp_path)
    with pytest.raises(HarnessError, match="did you mean"):
        load_documents("corpus:aclsum-paper")


def test_documents_read_in_small_pieces_are_the_documents_read_whole(tiny_models, tmp_path, monkeypatch):
    """Pieces of 7 characters (cut inside words, inside a blank line) give the same documents, and
    tokens, as reading each file whole: the streaming reader changes memory, not text."""
    from transformers import AutoTokenizer

    from harness.data import corpus

    text = "  the film was great.\nthe plot\n\n\n is dull   \n\ni think the cast is so fun\n\n\n\n"
    (tmp_path / "a.txt").write_text(text)
    whole = [d.strip() for d in text.split("\n\n") if d.strip()]
    tok = AutoTokenizer.from_pretrained(tiny_models["llama"])
    big = corpus.pack(tok, whole, 4).tolist()
    monkeypatch.setattr(corpus, "PIECE_CHARS", 7)
    pieces = [list(d) for d in corpus.iter_documents("a.txt", tmp_path)]
    assert max(len(p) for d in pieces for p in d) <= 2 * 7 + 2 and max(len(d) for d in pieces) > 2  # really in pieces
    assert ["".join(d) for d in pieces if d] == whole
    assert corpus.pack(tok, corpus.iter_documents("a.txt", tmp_path), 4).tolist() == big
    assert corpus.passages("a.txt", tmp_path, key="k", limit=2, max_chars=5) == ["the f", "is du"]


def test_a_jsonl_line_too_long_to_hold_is_one_sentence(tmp_path, monkeypatch):
    from harness.data import corpus

    monkeypatch.setattr(corpus, "MAX_JSONL_LINE", 100)
    (tmp_path / "c.jsonl").write_text(json.dumps({"text": "x" * 50}) + "\n" + json.dumps({"text": "y" * 200}) + "\n")
    problem, fix = corpus.source_problem("c.jsonl", tmp_path)
    assert problem.endswith("c.jsonl:2: line 2 is longer than 100 characters") and "split" in fix


def test_aclsum_corpus_holds_no_test_paper():
    import importlib.util

    if importlib.util.find_spec("aclsum") is None:  # found, never imported (it imports a missing module)
        pytest.skip("the aclsum package is not installed")
    from harness.data.prepared import package_dir

    dataset = package_dir("aclsum") / "dataset"
    ids = {
        f: {json.loads(line)["id"] for line in (dataset / f).read_text().splitlines() if line.strip()}
        for f in ("train.jsonl", "val.jsonl", "test.jsonl")
    }
    assert not (ids["train.jsonl"] | ids["val.jsonl"]) & ids["test.jsonl"]
    corpus = " ".join(load_documents("corpus:aclsum-papers") + load_documents("corpus:aclsum-papers-heldout"))
    for line in (dataset / "test.jsonl").read_text().splitlines():
        if line.strip():
            first_sentence = json.loads(line)["sentences"]["abstract"][0].strip()
            assert first_sentence not in corpus


@pytest.mark.slow
def test_cpt_stage_trains_on_token_budget_and_moves_domain_perplexity(write_experiment, tmp_path):
    domain = tmp_path / "domain.txt"
    domain.write_text(
        "\n\n".join(
            f"the story of the cast was {w} and the music was {w}."
            for w in ("good", "moving", "dull", "weak", "fun", "awful") * 4
        )
    )
    held_out = tmp_path / "held_out.txt"
    held_out.write_text("the music of the story was moving.\n\nthe cast was weak and the music was dull.")
    path = write_experiment(
        [
            {"method": "zero_shot", "model": "llama"},
            {
                "method": "lora",
                "model": "llama",
                "lr": 1e-2,
                "stages": [{"cpt": {"corpus": str(domain), "tokens": 300}}, "sft"],
            },
            {"method": "lora", "model": "llama", "lr": 1e-2, "stages": ["sft"]},
        ],
        budget={"domain_text": str(held_out), "forgetting_text": None, "bootstrap_resamples": 20, "max_seq_len": 32},
    )
    result = run_cli(path, "--no-track", cwd=tmp_path)
    assert result.exit_code == 0, result.output
    _, results = results_of(tmp_path)
    zero, cpt, sft = results["arms"]
    for arm in (zero, cpt, sft):
        assert arm["status"] == "ok", arm.get("error")
        assert arm["metrics"]["domain_perplexity"] > 1
    assert zero["metrics"]["domain_perplexity"] == zero["metrics_detail"]["domain_perplexity"]["before"]
    detail = cpt["metrics_detail"]["domain_perplexity"]
    assert detail["after"] != detail["before"] and "domain_perplexity" in cpt["ci"]
    stages = {s["name"]: s for s in cpt["consumed"]["extra"]["stages"]}
    steps = math.ceil(300 / (4 * 32))  # tokens / (batch_size x max_seq_len), rounded up
    assert stages["cpt"]["steps"] == steps and stages["cpt"]["tokens"] == steps * 4 * 32
    assert stages["cpt"]["extra"]["unit"] == "tokens" and stages["cpt"]["extra"]["block_tokens"] == 32
    assert "cpt_loss" in cpt["curves"]
    # The sft stage after cpt reads the same examples as the sft-only arm.
    assert stages["sft"]["order_hash"] == sft["consumed"]["extra"]["stages"][0]["order_hash"]


def test_validate_names_a_missing_corpus_and_domain_text(write_experiment, tmp_path):
    from typer.testing import CliRunner

    from harness.cli.main import app

    for arms, budget, key in (
        ([{"method": "lora", "model": "llama", "stages": [{"cpt": {"corpus": "nope.txt"}}, "sft"]}], {}, "cpt.corpus"),
        (
            [{"method": "lora", "model": "llama", "stages": [{"cpt": {"corpus": "corpus:aclsum-paper"}}]}],
            {},
            "did you mean",
        ),
        ([{"method": "zero_shot", "model": "llama"}], {"domain_text": "missing-dir"}, "budget.domain_text"),
    ):
        result = CliRunner().invoke(app, ["validate", str(write_experiment(arms, budget=budget))])
        assert result.exit_code == 2 and key in result.output, result.output


WATCH = """
import resource, subprocess, sys
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))  # a whole-file reader fails here, not the machine
code = subprocess.call([sys.executable, "-m", "harness", "run", sys.argv[1], "--no-track"])
print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)  # the largest process's peak
"""


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_a_100_mb_single_line_corpus_runs_in_bounded_memory(write_experiment, tmp_path):
    """The issue's case: a cpt corpus and domain text that are one 100 MB line, through `harness
    run` (validate, the cpt stage, domain perplexity). The largest process (the runner or the arm)
    peaks under 1.5 GB (measured 697 MB on 2026-12-05; the whole-file reader passed 10 GB)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    words = "the film was great and the plot is dull i think the cast is so fun ".encode()
    big = tmp_path / "one-line.txt"
    with open(big, "wb") as fh:
        for _ in range(100 * (1 << 20) // len(words) + 1):
            fh.write(words)
    assert big.stat().st_size >= 100 << 20 and b"\n" not in open(big, "rb").read(1 << 20)
    arm = {"method": "lora", "model": "llama", "lr": 1e-3, "stages": [{"cpt": {"corpus": str(big)}}, "sft"]}
    path = write_experiment([arm], budget={"domain_text": str(big), "forgetting_text": None})
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "HF_HUB_OFFLINE": "1"}
    try:
        done = subprocess.run(
            [sys.executable, "-c", WATCH, str(path)], cwd=tmp_path, capture_output=True, text=True, env=env
        )
    finally:
        big.unlink()
    code, peak_mb = map(int, done.stdout.split()[-2:])
    _, results = results_of(tmp_path)
    result = results["arms"][0]
    assert code == 0 and result["status"] == "ok", (result.get("error"), done.stderr[-2000:])
    assert result["consumed"]["extra"]["stages"][0]["extra"]["corpus_blocks"] > 100_000  # all of it tokenised
    assert result["metrics_detail"]["domain_perplexity"]["passages"] == 1
    assert peak_mb < 1536, f"peak RSS {peak_mb} MB"
