"""Embedding similarity (embedding_cosine) against a hand computation on the tiny encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.eval import metrics
from harness.eval.embedding import EmbeddingCosine


def test_embedding_cosine_is_the_cosine_of_mean_pooled_states(tiny_models):
    from transformers import AutoModel, AutoTokenizer

    scorer = EmbeddingCosine(str(tiny_models["bert"]))
    preds, refs = ["the film was great", "boring", "", "the cast was dull"], ["the film was great", "the plot was fun", "x", "dull"]
    got = scorer(preds, refs)
    # By hand, one text at a time (no padding), mean over every token:
    tok, model = AutoTokenizer.from_pretrained(tiny_models["bert"]), AutoModel.from_pretrained(tiny_models["bert"]).eval()

    def embed(text):
        with torch.inference_mode():
            return model(**tok(text, return_tensors="pt")).last_hidden_state[0].mean(0)

    for (p, r), value in zip(zip(preds, refs), got):
        want = 0.0 if not p else float(torch.nn.functional.cosine_similarity(embed(p), embed(r), dim=0))
        assert value == pytest.approx(want, abs=1e-4)
    assert got[0] == pytest.approx(1.0, abs=1e-5) and got[2] == 0.0
    assert got[1] != got[3]
    # Through the registry: the metric reads the scorer from Items, with a direction and a paired test.
    metric = metrics.METRICS["embedding_cosine"]
    assert metric.higher_is_better and metric.paired_test == "paired_bootstrap"
    value = metrics.value("embedding_cosine", preds, refs, embedding=scorer)
    assert value == pytest.approx(np.mean(got), abs=1e-6)
    assert scorer.detail()["model"] == str(tiny_models["bert"])
