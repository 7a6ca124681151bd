"""Reward functions for GRPO and RFT, as plugins: `@register_reward("name")` for built-ins, the
`harness.rewards` entry-point group for third-party packages. A reward scores one completion
against what the task knows about its prompt (the target and, for classification, the labels);
`as_trl(spec)` adapts it to TRL's `fn(completions, **columns) -> list[float]`.

A reward is a `Reward` subclass (with a `Params` model when it takes parameters); a plain
function `fn(completion, target, labels) -> float` registered with the decorator or through the
entry-point group is wrapped into one. In a stage's `rewards:` list an entry is a name
(`format`) or `{name: {params}}`; a reward with a `shorthand` also takes `{name: value}`, the
value filling that one parameter (`{reward_model: rm}` is `{reward_model: {model: rm}}`).

A reward that needs the prompt or a model (`reward_model`) overrides `score` (a batch, prompts
included) and `prepare` (called once by the stage, with its StageContext, before scoring)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field, ValidationError

from harness.errors import did_you_mean
from harness.plugins import Params, Plugin, Registry


class Reward(Plugin):
    """Scores one completion: `reward(completion, target, labels) -> float`."""

    shorthand: ClassVar[str | None] = None  # the parameter `{name: value}` fills
    arm_param: ClassVar[str | None] = None  # a parameter that may name an earlier arm (whose output it reads)

    def __init__(self, params: dict | None = None):
        self.params = self.Params.model_validate(params or {})  # typed: a reward reads self.params.x

    @classmethod
    def folder_problem(cls, folder: Path) -> str | None:
        """Why a saved folder named by `arm_param` cannot be read by this reward (checked at validate)."""
        return None

    def __call__(self, completion: str, target: str, labels: list[str] | None = None) -> float:
        raise NotImplementedError

    def prepare(self, ctx) -> None:
        """Load what scoring needs (a model), once per stage; ctx is the stage's StageContext."""

    def score(self, completions: list[str], prompts: list[str], targets: list[str], labels: list) -> list[float]:
        """A batch of completions with their prompts; by default one __call__ each."""
        return [self(c, t, lab) for c, t, lab in zip(completions, targets, labels)]


def as_reward_class(obj):
    """A plain reward function becomes a Reward subclass; classes pass through unchanged."""
    if isinstance(obj, type) or not callable(obj):
        return obj
    fn = staticmethod(obj)
    return type(
        f"{obj.__name__}_reward",
        (Reward,),
        {
            "__call__": lambda self, c, t, labels=None: fn(c, t, labels),
            "__doc__": obj.__doc__,
            "__module__": obj.__module__,
            "description": " ".join((obj.__doc__ or "").split()),
        },
    )


REWARDS = Registry("reward", "harness.rewards", base=Reward, adapt=as_reward_class)


def register_reward(name: str):
    return REWARDS.register(name)


def _answer(completion: str) -> str:
    """The completion as an answer: first line, trimmed, lower-cased, end punctuation dropped."""
    lines = completion.strip().splitlines()
    return (lines[0] if lines else "").strip().strip(".!").strip().lower()


@register_reward("label_correct")
def label_correct(completion: str, target: str, labels=None) -> float:
    """1 when the answer is the reference label (or reference text), else 0."""
    return float(_answer(completion) == target.strip().lower())


@register_reward("rouge_l")
def rouge_l(completion: str, target: str, labels=None) -> float:
    """ROUGE-L F-measure of the completion against the reference (rouge-score, stemmed)."""
    from harness.eval.text_metrics import rouge

    return rouge("rougeL", completion, target)


@register_reward("format")
def format_ok(completion: str, target: str, labels=None) -> float:
    """Classification: 1 when the answer is one of the labels. Generation: 1 when the
    completion is non-empty and at most twice the reference's length in words."""
    if labels:
        return float(_answer(completion) in {label.lower() for label in labels})
    words = len(completion.split())
    return float(0 < words <= max(2 * len(target.split()), 1))


def get_reward(name: str, params: dict | None = None) -> Reward:
    return REWARDS.get(name)(params)


def reward_names() -> list[str]:
    return REWARDS.names()


def reward_spec(entry) -> tuple[str, dict]:
    """A `rewards:` entry -> (name, params as given): `name`, `{name: {params}}` or, for a reward
    with a shorthand, `{name: value}`. Raises ValueError with the sentence a user should read."""
    if isinstance(entry, str):
        entry = {entry: None}
    if not isinstance(entry, dict) or len(entry) != 1:
        raise ValueError("a reward is a name or {name: {params}} with exactly one name")
    name, given = next(iter(entry.items()))
    known = reward_names()
    if name not in known:
        raise ValueError(f"unknown reward '{name}'; {did_you_mean(name, known)}")
    if given is None or isinstance(given, dict):
        return name, dict(given or {})
    shorthand = REWARDS.get(name).shorthand
    if shorthand is None:
        raise ValueError(f"reward '{name}' takes {{params}} as a mapping, not {given!r}")
    return name, {shorthand: given}


def normalize_rewards(entries: list) -> list:
    """Entries validated with each reward's Params: plain names stay names (so the hashes of arms
    that name rewards keep their value), the others become {name: {params with defaults}}."""
    out = []
    for entry in entries:
        name, given = reward_spec(entry)
        if isinstance(entry, str):
            out.append(name)
            continue
        try:
            out.append({name: REWARDS.get(name)(given).params.model_dump(mode="json")})
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"reward '{name}': {where + ': ' if where else ''}{first['msg'].lower()}") from None
    return out


def rewards_list(value):
    """The `rewards:` validator of a stage's Params: a non-empty list, each entry normalized."""
    if isinstance(value, str) or not value or not isinstance(value, list):
        raise ValueError("`rewards` must be a non-empty list of reward names, for example [label_correct, format]")
    return normalize_rewards(value)


def arm_references(stages: list[dict]) -> list[tuple[dict, str]]:
    """(reward params, the key that may name an arm) of every reward in an arm's resolved stages
    whose plugin reads another arm's output: the plan links them, the runner orders by them."""
    found = []
    for stage in stages:
        for entry in stage["params"].get("rewards") or []:
            if isinstance(entry, dict):
                name, params = next(iter(entry.items()))
                key = REWARDS.get(name).arm_param
                if key and isinstance(params, dict):
                    found.append((params, key))
    return found


def build_rewards(entries: list, ctx=None) -> list[tuple[str, Reward]]:
    """(label, prepared Reward) per entry of a stage's normalized `rewards:` list."""
    built = []
    for entry in entries:
        name, params = reward_spec(entry)
        reward = get_reward(name, params)
        reward.prepare(ctx)
        built.append((name, reward))
    return built


def as_trl(entry, ctx=None):
    """TRL's reward signature: the dataset's `target` and `labels` columns arrive as lists."""
    ((name, reward),) = build_rewards([entry], ctx)

    def fn(completions, target, labels=None, prompts=None, **_):
        texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
        labels = labels or [None] * len(texts)
        prompts = [p if isinstance(p, str) else p[-1]["content"] for p in prompts] if prompts else [""] * len(texts)
        return [float(v) for v in reward.score(texts, prompts, list(target), list(labels))]

    fn.__name__ = name  # TRL logs rewards/<name>/mean
    return fn


@register_reward("reward_model")
class RewardModelReward(Reward):
    """A trained reward model's scalar score of prompt + completion: an earlier arm's
    `reward_model` stage (by its `name:`) or the folder of a saved reward model."""

    description = "a trained reward model's score of prompt + completion ({reward_model: <arm name or folder>})"
    shorthand = "model"
    arm_param = "model"

    class Params(Params):
        model: str = Field(description="the `name:` of an earlier arm with a reward_model stage, or a saved folder")
        arm: str | None = Field(None, description="set by the plan: the folder of the arm named by `model`")

    @classmethod
    def folder_problem(cls, folder: Path) -> str | None:
        from harness.stages.reward_model import saved_folder_problem

        return saved_folder_problem(folder)

    def prepare(self, ctx) -> None:
        from harness.stages.reward_model import RewardScorer, reward_model_folder

        self.scorer = RewardScorer.load(reward_model_folder(self.params, ctx))

    def score(self, completions, prompts, targets, labels) -> list[float]:
        return self.scorer.score([p + c for p, c in zip(prompts, completions)])

    def __call__(self, completion: str, target: str, labels=None) -> float:
        return self.scorer.score([completion])[0]
