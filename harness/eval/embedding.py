"""Embedding similarity: cosine between mean-pooled sentence embeddings of the prediction and
the reference, from a local encoder (never the hub), by default the packaged MiniLM, which was
trained for exactly this pooling (sentence-transformers' all-MiniLM-L6-v2).

Like BERTScore, cosines from different encoders are not comparable, so the model is recorded
next to the score (metrics_detail.embedding_cosine).
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL = "packaged:minilm-l6"


class EmbeddingCosine:
    """Callable (predictions, references) -> per-item cosine, loaded once per arm."""

    def __init__(self, source: str, *, base_dir: Path | None = None, batch_size: int = 32, max_len: int = 256):
        from harness import models

        self.source = source
        self.model_dir = models.resolve_model_dir(source, base_dir=base_dir)
        self.batch_size, self.max_len = batch_size, max_len
        self._model = self._tokenizer = None

    def _load(self):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        self._model = AutoModel.from_pretrained(self.model_dir, dtype=torch.float32).eval()
        positions = getattr(self._model.config, "max_position_embeddings", self.max_len)
        self.max_len = min(self.max_len, positions)

    def embed(self, texts: list[str]):
        """Unit-length mean-pooled embeddings (padding excluded from the mean)."""
        import torch

        if self._model is None:
            self._load()
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                enc = self._tokenizer(
                    texts[i : i + self.batch_size],
                    padding=True,
                    truncation=True,
                    max_length=self.max_len,
                    return_tensors="pt",
                )
                hidden = self._model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
                out.append(torch.nn.functional.normalize(pooled, dim=-1))
        return torch.cat(out) if out else torch.empty(0)

    def __call__(self, predictions: list[str], references: list[str]) -> list[float]:
        # An empty prediction says nothing: score it 0 rather than the cosine of a bare [CLS]/[SEP].
        pred_vecs, ref_vecs = self.embed([p if p.strip() else "." for p in predictions]), self.embed(list(references))
        cosines = (pred_vecs * ref_vecs).sum(-1).tolist()
        return [0.0 if not p.strip() else round(float(c), 6) for p, c in zip(predictions, cosines)]

    def detail(self) -> dict:
        return {"model": self.source, "model_dir": str(self.model_dir), "pooling": "mean", "normalized": True}


def from_budget(budget, base_dir: Path | None) -> EmbeddingCosine | None:
    source = budget.embedding_model
    return EmbeddingCosine(source, base_dir=base_dir) if source else None
