"""How a decoder sees an example: prompt (chat template when the tokenizer has one) and target.

Training (sft) and evaluation (label scoring, generation) both go through this one formatter,
so what a model is trained on is exactly what it is scored on.
"""

from __future__ import annotations

import string

from harness.tasks import task_type


def render(template: str, example: dict) -> str:
    """str.format over an example's fields, with an error that names the missing field."""
    fields = [f for _, f, _, _ in string.Formatter().parse(template) if f]
    missing = [f for f in fields if f not in example]
    if missing:
        raise KeyError(f"prompt template needs field '{missing[0]}', examples have: {', '.join(sorted(example))}")
    return template.format_map(example)


def target_of(example: dict, task: dict):
    """What a model should produce for this example: its task type's target field."""
    return example[task_type(task["type"]).target]


class PromptFormatter:
    def __init__(self, tokenizer, task: dict, shots: list[dict] | None = None):
        self.tokenizer, self.task, self.shots = tokenizer, task, shots or []
        self.chat = bool(getattr(tokenizer, "chat_template", None))
        self.eos = tokenizer.eos_token or ""

    def prompt(self, example: dict) -> str:
        instruction = self.task.get("instruction")
        if self.chat:
            messages = [{"role": "system", "content": instruction}] if instruction else []
            for shot in self.shots:
                messages += [
                    {"role": "user", "content": render(self.task["prompt"], shot)},
                    {"role": "assistant", "content": target_of(shot, self.task)},
                ]
            messages.append({"role": "user", "content": render(self.task["prompt"], example)})
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        parts = [instruction] if instruction else []
        parts += [f"{render(self.task['prompt'], s)} {target_of(s, self.task)}" for s in self.shots]
        parts.append(render(self.task["prompt"], example))
        return "\n\n".join(parts)

    def completion(self, target: str, end_of_turn: bool = True) -> str:
        """The text a model should produce after the prompt, ending with its end-of-turn token
        (label scoring may leave that token out: see harness.eval.scoring_rule)."""
        return (target if self.chat else " " + target) + (self.eos if end_of_turn else "")

    def completion_ids(self, target: str, end_of_turn: bool = True) -> list[int]:
        return self.tokenizer(self.completion(target, end_of_turn), add_special_tokens=False)["input_ids"]

    def encode(self, example: dict, target: str | None, max_len: int) -> tuple[list[int], list[int]]:
        """Token ids of prompt and completion; the prompt is cut from the left to fit max_len."""
        tok = self.tokenizer
        # A chat template already writes any BOS it wants; plain prompts get the tokenizer's.
        prompt_ids = tok(self.prompt(example), add_special_tokens=not self.chat)["input_ids"]
        completion_ids = self.completion_ids(target) if target is not None else []
        room = max(max_len - len(completion_ids), 1)
        return prompt_ids[-room:], completion_ids
