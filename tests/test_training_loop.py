"""The one training loop on accelerate (issue 13): token-normalised gradient accumulation, mixed
precision with fp32 master weights, checkpoints that survive a torn file, and the budget keys
that place one arm on several devices."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest
import torch

from harness.config.schema import Budget
from harness.data.encoding import pad_batch
from harness.training import checkpoint, loop
from harness.training.distributed import make_accelerator
from harness.training.sft import predicted_tokens

BUDGET = Budget(
    max_steps=1,
    batch_size=8,
    grad_accum=1,
    seed=0,
    lr_schedule="constant",
    warmup_ratio=0.0,
    weight_decay=0.0,
    max_grad_norm=1e9,
    precision="fp32",
)


def budget(**changes) -> Budget:
    return Budget.model_validate({**BUDGET.model_dump(), **changes})


@pytest.fixture(scope="module")
def llama(tiny_models):
    from harness import models

    return models.load_tokenizer(tiny_models["llama"]), tiny_models["llama"]


def _gradients(model_dir, rows, pad_id, accum: int, normalise) -> torch.Tensor:
    """The gradient of one optimizer step over `rows`, cut into `accum` micro-batches."""
    from harness import models

    torch.manual_seed(0)
    model = models.load_model(model_dir, "causal_lm")
    model.eval()  # no dropout: the two runs must see the same function
    accelerator = make_accelerator(BUDGET)
    micro = len(rows) // accum
    batches = [pad_batch(rows[m * micro : (m + 1) * micro], pad_id)[0] for m in range(accum)]
    stream = loop.Stream(lambda idx: None, [], predicted_tokens)
    if normalise:
        items = sum(predicted_tokens(b) for b in batches)
        loop.backward_step(accelerator, model, stream, [(b, predicted_tokens(b)) for b in batches], items)
    else:  # what the loop did before: each micro-batch's mean, averaged
        for b in batches:
            (model(**b).loss / accum).backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def test_accumulation_normalises_over_the_steps_target_tokens(llama):
    tokenizer, model_dir = llama
    # Completions of very different lengths: a per-micro-batch mean would weigh a short one's
    # tokens as much as a long one's.
    rows = [
        (
            tokenizer("review: the film was good sentiment:")["input_ids"],
            tokenizer(" positive" * (1 + 5 * (i % 2 == 0) * (i < 2)))["input_ids"],
        )
        for i in range(8)
    ]
    whole = _gradients(model_dir, rows, tokenizer.pad_token_id, 1, normalise=True)
    split = _gradients(model_dir, rows, tokenizer.pad_token_id, 4, normalise=True)
    torch.testing.assert_close(split, whole, rtol=1e-5, atol=1e-7)
    naive = _gradients(model_dir, rows, tokenizer.pad_token_id, 4, normalise=False)
    assert not torch.allclose(naive, whole, rtol=1e-3, atol=1e-6)  # the test can tell the difference


class OneWeight(torch.nn.Module):
    """loss = (w * x - y)^2 with w = 1.0 stored in bf16 (as a model loaded with dtype bfloat16)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1, dtype=torch.bfloat16))
        self.forward_dtypes = []

    def forward(self, x, labels):
        out = torch.nn.functional.linear(x, self.w.view(1, 1))
        self.forward_dtypes.append(out.dtype)
        return SimpleNamespace(loss=((out.float() - labels) ** 2).mean())


def test_bf16_autocast_keeps_fp32_master_weights_and_small_updates():
    model = OneWeight()

    def make_batch(indices):
        return {"x": torch.ones(len(indices), 1), "labels": torch.zeros(len(indices), 1)}, len(indices)

    lr = 1e-4  # Adam's first update is ~lr: far below bf16's spacing at 1.0 (2**-7)
    consumed, _ = loop.train(
        model,
        n_examples=8,
        ids=[str(i) for i in range(8)],
        make_batch=make_batch,
        budget=budget(precision="bf16"),
        lr=lr,
    )
    assert consumed.steps == 1
    assert model.forward_dtypes == [torch.bfloat16]  # the forward ran under autocast
    assert model.w.dtype == torch.float32  # the master weight
    assert model.w.item() == pytest.approx(1.0 - lr, rel=1e-6)
    # Pure bf16 training would have rounded that update away: the case is constructed right.
    assert torch.tensor(1.0 - lr, dtype=torch.bfloat16).item() == 1.0


def test_optimizer_state_is_fp32_under_bf16(monkeypatch):
    states = []
    real_step = torch.optim.AdamW.step

    def spy(self, *args, **kwargs):
        out = real_step(self, *args, **kwargs)
        states.extend(v.dtype for s in self.state.values() for k, v in s.items() if k != "step")
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    model = OneWeight()
    loop.train(
        model,
        n_examples=4,
        ids=list("abcd"),
        budget=budget(batch_size=4, precision="bf16"),
        make_batch=lambda idx: ({"x": torch.ones(len(idx), 1), "labels": torch.zeros(len(idx), 1)}, 1),
        lr=1e-3,
    )
    assert states and set(states) == {torch.float32}


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 runs on CUDA")
def test_fp16_on_cpu_is_refused_rather_than_silently_fp32():
    from harness.errors import HarnessError

    with pytest.raises(HarnessError, match="fp16 needs a CUDA GPU"):
        make_accelerator(budget(precision="fp16"))


def test_a_torn_latest_checkpoint_falls_back_to_the_one_before(tmp_path):
    folder = tmp_path / "checkpoints"
    for step in (2, 4, 6):
        payload = dict.fromkeys(checkpoint.PAYLOAD[1:], {}) | {"rng": [checkpoint.rng_state()]}
        checkpoint.save(folder, step, payload | {"value": torch.tensor([float(step)])})
    assert sorted(p.name for p in folder.glob("step-*.pt")) == ["step-00000004.pt", "step-00000006.pt"]  # pruned
    latest = folder / "step-00000006.pt"
    latest.write_bytes(latest.read_bytes()[:100])  # a kill mid-copy, a full disk
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state = checkpoint.load_latest(folder)
    assert state["step"] == 4 and state["value"].item() == 4.0
    assert any("skipping unreadable checkpoint" in str(w.message) and "step-00000006" in str(w.message) for w in caught)


def test_rng_state_round_trips():
    import random

    import numpy as np

    state = checkpoint.rng_state()
    drawn = (random.random(), np.random.rand(), torch.rand(1).item())
    checkpoint.set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == drawn


def test_default_checkpoint_interval():
    assert checkpoint.interval(budget(checkpoint_every=None), 200) == 0
    assert checkpoint.interval(budget(checkpoint_every=None), 3000) == 300
    assert checkpoint.interval(budget(checkpoint_every=7), 50) == 7
    assert checkpoint.interval(budget(checkpoint_every=0), 3000) == 0


def test_devices_and_precision_in_the_plan(write_experiment):
    from harness.errors import HarnessError
    from harness.planning.experiment_loader import load_experiment
    from harness.planning.plan import plan

    arms = [
        {"method": "lora", "model": "llama", "lr": 1e-3},
        {"method": "lora", "model": "llama", "lr": 1e-3, "name": "two", "devices": 2},
        {"method": "zero_shot", "model": "llama"},
    ]
    base, spread, prompting = plan(load_experiment(write_experiment(arms)))
    assert (base.devices, spread.devices, prompting.devices) == (1, 2, 1)
    assert spread.budget.strategy == "ddp"
    # checkpoint_every and the new keys at their defaults leave earlier arms' hashes as they were
    same = plan(load_experiment(write_experiment(arms[:1], budget={"checkpoint_every": 5, "precision": "auto"})))[0]
    assert same.hash == base.hash
    assert plan(load_experiment(write_experiment(arms[:1], budget={"precision": "bf16"})))[0].hash != base.hash
    assert plan(load_experiment(write_experiment(arms[:1], budget={"devices": 2})))[0].devices == 2

    with pytest.raises(HarnessError) as err:  # batch 4 over 3 devices
        load_experiment(write_experiment([{**arms[0], "devices": 3}]))
    assert "cannot be split evenly over 3 devices" in str(err.value) and "experiment.yaml" in str(err.value)
    with pytest.raises(HarnessError) as err:
        load_experiment(write_experiment([{**arms[0], "method": "qlora", "devices": 2, "strategy": "fsdp"}]))
    assert "does not train under FSDP" in str(err.value) and "strategy: ddp" in str(err.value)

    # activation checkpointing is part of the budget identity away from its default (false);
    # the process-group timeout never changes a result
    def hash_with(**keys) -> str:
        return plan(load_experiment(write_experiment(arms[:1], budget=keys)))[0].hash

    assert hash_with(gradient_checkpointing=False) == hash_with(dist_timeout_s=60) == base.hash
    assert hash_with(gradient_checkpointing=True) != base.hash


def train_tiny_llama(model_dir, **changes):
    """A 3-step full fine-tune of the tiny Llama on fixed token rows, in this process."""
    from harness import models

    torch.manual_seed(0)
    model = models.load_model(model_dir, "causal_lm")
    rows = torch.randint(3, model.config.vocab_size, (16, 24), generator=torch.Generator().manual_seed(1))

    def make_batch(indices):
        ids = rows[indices]
        return {"input_ids": ids, "labels": ids}, ids.numel()

    consumed, curve = loop.train(
        model,
        n_examples=16,
        ids=[str(i) for i in range(16)],
        make_batch=make_batch,
        budget=budget(max_steps=3, batch_size=4, grad_accum=2, **changes),
        lr=1e-3,
        loss_items=lambda t: int(t["input_ids"].numel()),
    )
    return model, consumed, curve, rows[:2]


def test_fsdp_at_world_size_one_trains_as_one_device_and_evaluates_a_plain_model(llama):
    """The sharded path in this process (a one-rank gloo group): every parameter a DTensor during
    training, the same losses as unsharded training, and afterwards a plain model gathered from
    the full state dict that evaluates in fp32 and in bf16 (the hooked module could not: issue 25)."""
    from torch.distributed.fsdp import FSDPModule

    from harness.eval.precision import for_evaluation
    from harness.training.fsdp import evaluable

    _, model_dir = llama
    plain, _, curve, rows = train_tiny_llama(model_dir)
    sharded, consumed, sharded_curve, _ = train_tiny_llama(model_dir, strategy="fsdp")
    assert [loss for _, loss in sharded_curve] == pytest.approx([loss for _, loss in curve], abs=1e-6)
    (rank,) = consumed.extra["devices"]["ranks"]
    assert rank["blocks"] == 2 and rank["unsharded_params"] == 0 and rank["min_fraction"] == 1.0
    assert isinstance(sharded, FSDPModule) and not torch.distributed.is_initialized()  # the group is gone
    gathered = evaluable(sharded)
    assert gathered is not sharded and not isinstance(gathered, FSDPModule)
    for name, param in gathered.named_parameters():
        assert type(param) is torch.nn.Parameter and param.device.type == "cpu", name
    with torch.no_grad():
        expected = plain(input_ids=rows).logits
        torch.testing.assert_close(gathered(input_ids=rows).logits, expected, rtol=1e-5, atol=1e-5)
        in_bf16 = for_evaluation(gathered, "bf16")
        assert {p.dtype for p in in_bf16.parameters()} == {torch.bfloat16}
        torch.testing.assert_close(in_bf16(input_ids=rows).logits.float(), expected, rtol=0.05, atol=0.1)


def test_activation_checkpointing_keeps_the_losses_and_saves_fewer_activations(llama):
    """budget.gradient_checkpointing: per-block recomputation. Measured by the bytes autograd saves
    for the backward pass during training (what activation memory is), not by wall time or RSS."""
    _, model_dir = llama
    saved = {}
    for on in (False, True):
        total = [0]

        def pack(tensor, total=total):
            total[0] += tensor.numel() * tensor.element_size()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model, _, curve, _ = train_tiny_llama(model_dir, gradient_checkpointing=on)
        saved[on] = (total[0], curve)
        assert model.model.gradient_checkpointing is on  # transformers' per-block switch
    assert [loss for _, loss in saved[True][1]] == pytest.approx([loss for _, loss in saved[False][1]], abs=1e-6)
    assert saved[True][0] < 0.7 * saved[False][0]
