"""Reward functions for GRPO, as plugins: `@register_reward("name")` for built-ins, the
`harness.rewards` entry-point group for third-party packages. A reward scores one completion
against what the task knows about its prompt (the target and, for classification, the labels);
`as_trl(name)` adapts it to TRL's `fn(completions, **columns) -> list[float]`.

A reward is a `Reward` subclass (with a `Params` model when it takes parameters); a plain
function `fn(completion, target, labels) -> float` registered with the decorator or through the
entry-point group is wrapped into one."""

from __future__ import annotations

from harness.plugins import Plugin, Registry


class Reward(Plugin):
    """Scores one completion: `reward(completion, target, labels) -> float`."""

    def __init__(self, params: dict | None = None):
        self.params = self.Params.model_validate(params or {}).model_dump(mode="json")

    def __call__(self, completion: str, target: str, labels: list[str] | None = None) -> float:
        raise NotImplementedError


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


def as_trl(name: str):
    """TRL's reward signature: the dataset's `target` and `labels` columns arrive as lists."""
    reward = get_reward(name) if isinstance(name, str) else get_reward(*next(iter(name.items())))

    def fn(completions, target, labels=None, **_):
        texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
        labels = labels or [None] * len(texts)
        return [reward(text, t, lab) for text, t, lab in zip(texts, target, labels)]

    fn.__name__ = name  # TRL logs rewards/<name>/mean
    return fn
