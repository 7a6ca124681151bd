"""Preference metrics on held-out pairs, comparable across arms.

preference_accuracy: share of pairs where the model gives the chosen completion a higher
length-normalised log-prob than the rejected one (every arm, SFT-only included). Against the
reference (the model before the first preference stage, kept as a snapshot of the trainable
parameters): DPO-style implicit reward accuracy and mean margin (beta = 1, in nats, so arms with
different betas compare), and the mean per-token KL(policy || reference) over the vocabulary at
the chosen completions' positions.
"""

from __future__ import annotations

import contextlib

import torch

from harness.data.encoding import pad_batch
from harness.eval.likelihood import shifted_logprobs


class PreferenceProbe:
    def __init__(self, pairs: list[dict], tokenizer, *, max_len: int, batch_size: int):
        self.tokenizer, self.batch_size, self.snapshot = tokenizer, batch_size, None
        enc = lambda t: tokenizer(t, add_special_tokens=False)["input_ids"]  # noqa: E731 - like TRL
        self.rows = []
        for p in pairs:
            prompt = enc(p["prompt"])
            for side in ("chosen", "rejected"):
                completion = enc(p[side])[: max_len - 1]
                self.rows.append((prompt[-(max_len - len(completion)) :], completion))

    def take_snapshot(self, model) -> None:
        """The reference: the trainable parameters as they are now (before preference training)."""
        self.snapshot = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    @contextlib.contextmanager
    def _as_reference(self, model):
        params = dict(model.named_parameters())
        current = {n: params[n].detach().clone() for n in self.snapshot}
        with torch.no_grad():
            for n, value in self.snapshot.items():
                params[n].copy_(value)
        try:
            yield
        finally:
            with torch.no_grad():
                for n, value in current.items():
                    params[n].copy_(value)

    def _batches(self, model):
        device = next(model.parameters()).device
        for i in range(0, len(self.rows), self.batch_size * 2):
            tensors, _ = pad_batch(self.rows[i : i + self.batch_size * 2], self.tokenizer.pad_token_id)
            yield {k: v.to(device) for k, v in tensors.items()}

    @staticmethod
    def _logprobs(model, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log-softmax over the vocabulary, targets, target mask) at the positions that predict a
        completion token in some row: only those get the LM head, as in all of harness.eval."""
        return shifted_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["labels"])

    def measure(self, model) -> dict[str, float | None]:
        model.eval()
        seq, ref_seq, kl_sum, kl_n = [], [], 0.0, 0
        with torch.inference_mode():
            for batch in self._batches(model):
                policy, targets, mask = self._logprobs(model, batch)
                mask = mask.float()
                picked = lambda lp: lp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask  # noqa: E731
                seq += list(zip(picked(policy).sum(-1).tolist(), mask.sum(-1).tolist()))
                if self.snapshot is not None:
                    with self._as_reference(model):
                        ref = self._logprobs(model, batch)[0]
                    ref_seq += picked(ref).sum(-1).tolist()
                    chosen = mask[0::2]  # rows alternate chosen, rejected: KL on the chosen ones
                    kl = (policy.exp() * (policy - ref)).sum(-1)[0::2]
                    kl_sum, kl_n = kl_sum + float((kl * chosen).sum()), kl_n + int(chosen.sum())
        return summarise(seq, ref_seq if self.snapshot is not None else None, kl_sum / kl_n if kl_n else None)


def summarise(seq: list[tuple[float, float]], ref: list[float] | None, kl: float | None) -> dict:
    """seq: (summed log-prob, tokens) per row, rows alternating chosen/rejected; ref: summed
    reference log-probs per row, or None when the arm has no preference stage."""
    chosen, rejected = seq[0::2], seq[1::2]
    n = len(chosen)
    better = [c / max(cn, 1) > r / max(rn, 1) for (c, cn), (r, rn) in zip(chosen, rejected)]
    out = {
        "preference_accuracy": round(sum(better) / n, 6) if n else None,
        "reward_accuracy": None,
        "reward_margin": None,
        "kl_to_reference": None,
    }
    if ref is not None and n:
        margins = [(c - rc) - (r - rr) for (c, _), (r, _), rc, rr in zip(chosen, rejected, ref[0::2], ref[1::2])]
        out.update(
            reward_accuracy=round(sum(m > 0 for m in margins) / n, 6),
            reward_margin=round(sum(margins) / n, 6),
            kl_to_reference=round(kl, 6) if kl is not None else None,
        )
    return out
