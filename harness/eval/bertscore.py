"""BERTScore against a local model (never the hub): by default the packaged MiniLM.

Scores from different scorer models or layers are not comparable, so the model and layer are
recorded next to the score (metrics_detail.bertscore) and the report can refuse to mix them.
"""

from __future__ import annotations

from pathlib import Path

from harness.config.schema import Budget

DEFAULT_MODEL = "packaged:minilm-l6"
# all-MiniLM-L6-v2 is not in bert_score's table of tuned layers. Its 6-layer relatives there
# (distilbert-base-uncased, distilroberta-base) use layer 5 of 6, so we do the same.
DEFAULT_LAYER_FROM_TOP = 1


def default_layer(model_dir: Path) -> int:
    import json

    config = json.loads((Path(model_dir) / "config.json").read_text())
    return max(int(config["num_hidden_layers"]) - DEFAULT_LAYER_FROM_TOP, 1)


class BertScore:
    """Callable (predictions, references) -> per-item F1, loaded once per arm."""

    def __init__(self, source: str, *, layer: int | None = None, base_dir: Path | None = None, batch_size: int = 32):
        from harness import models

        self.source = source
        self.model_dir = models.resolve_model_dir(source, base_dir=base_dir)
        self.layer = layer or default_layer(self.model_dir)
        self.batch_size = batch_size
        self._scorer = None

    def _load(self):
        import torch
        from bert_score import BERTScorer

        self._scorer = BERTScorer(
            model_type=str(self.model_dir),
            num_layers=self.layer,
            batch_size=self.batch_size,
            device="cuda" if torch.cuda.is_available() else "cpu",
        )
        # A tokenizer saved without model_max_length reports a huge sentinel, which bert_score
        # passes on as the truncation length (OverflowError): cap it at the model's positions.
        tokenizer = self._scorer._tokenizer
        positions = getattr(self._scorer._model.config, "max_position_embeddings", 512)
        tokenizer.model_max_length = min(tokenizer.model_max_length, positions)
        return self._scorer

    def __call__(self, predictions: list[str], references: list[str]) -> list[float]:
        scorer = self._scorer or self._load()
        # bert_score gives an empty candidate a zero vector; score it 0 rather than warn.
        _, _, f1 = scorer.score([p if p.strip() else "." for p in predictions], list(references), verbose=False)
        return [0.0 if not p.strip() else float(f) for p, f in zip(predictions, f1.tolist())]

    def detail(self) -> dict:
        return {
            "model": self.source,
            "model_dir": str(self.model_dir),
            "layer": self.layer,
            "idf": False,
            "rescaled": False,
        }


def from_budget(budget: Budget, base_dir: Path | None) -> BertScore | None:
    source = budget.bertscore_model
    if not source:
        return None
    return BertScore(source, layer=budget.bertscore_layer, base_dir=base_dir)
