"""LLM-as-a-judge for generation tasks: a local model or an OpenAI-compatible HTTP endpoint
(what vLLM, TGI, llama.cpp and hosted APIs serve) grades each answer.

Modes: `grade` (a 1-10 grade on a rubric; the parsed grade and the raw reply kept per item) and
`pairwise_reference` (the answer against the reference answer, asked in both orders: position
bias shows as a judge that contradicts itself, which counts as a tie and lowers the
position-consistency rate). Replies are cached on disk by hash of (judge, prompt), so a rerun
costs nothing; failures (HTTP errors, timeouts) are not cached, so a rerun retries them.
A failed or unparseable item is counted and left out of the mean; it never fails the arm.
The API key is read from the environment variable the YAML names and goes nowhere else.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError
from harness.paths import atomic_write_text, cache_dir

GRADE = re.compile(r"(?<!\d)(10|[1-9])(?!\d)")
VERDICT = re.compile(r"\b(A|B|tie)\b", re.IGNORECASE)


@dataclass
class Reply:
    text: str | None
    tokens: int = 0
    error: str | None = None
    cached: bool = False


class HttpJudge:
    """POST {base_url}/chat/completions, greedy, `max_tokens` tokens."""

    def __init__(self, spec):
        self.url = spec.base_url.rstrip("/") + "/chat/completions"
        self.model, self.timeout_s, self.max_tokens = spec.model, spec.timeout_s, spec.max_tokens
        self._key = os.environ.get(spec.api_key_env) if spec.api_key_env else None
        if spec.api_key_env and not self._key:
            raise HarnessError(
                f"budget.judge.api_key_env: the environment variable {spec.api_key_env} is not set; "
                "export it before the run"
            )
        self.identity = f"http {self.url} {self.model}"

    def complete(self, prompt: str) -> Reply:
        import urllib.error
        import urllib.request

        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": self.max_tokens,
            "temperature": 0,
        }
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                data = json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as err:
            return Reply(None, error=f"HTTP {err.code}")
        except (TimeoutError, OSError) as err:  # socket timeouts, refused connections (URLError is an OSError)
            return Reply(None, error="timeout" if "timed out" in str(err) else f"connection: {type(err).__name__}")
        except ValueError:
            return Reply(None, error="response is not JSON")
        try:
            text = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            return Reply(None, error="response has no choices[0].message.content")
        return Reply(str(text), int((data.get("usage") or {}).get("total_tokens") or 0))


class LocalJudge:
    """A local (or packaged, or hub when online) causal LM, greedy, through its chat template."""

    def __init__(self, spec, base_dir: Path | None):
        from harness import models

        self.model_dir = models.resolve_model_dir(spec.model, base_dir=base_dir)
        self.max_tokens = spec.max_tokens
        self.identity = f"local {spec.model}"
        self._model = self._tokenizer = None

    def complete(self, prompt: str) -> Reply:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if self._model is None:
            self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
            self._model = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=torch.float32).eval()
        return Reply(*generate_reply(self._model, self._tokenizer, prompt, self.max_tokens))


def generate_reply(model, tokenizer, prompt: str, max_tokens: int, **generate_kwargs) -> tuple[str, int]:
    """Greedy chat reply and the tokens it used (prompt + completion), as a server would count them."""
    import torch

    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"]
    with torch.inference_mode():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
            **generate_kwargs,
        )
    new = out[0, ids.shape[1] :]
    return tokenizer.decode(new, skip_special_tokens=True), int(ids.shape[1] + len(new))


def make_judge(spec, base_dir: Path | None):
    return HttpJudge(spec) if spec.base_url else LocalJudge(spec, base_dir)


def ask(judge, prompt: str) -> Reply:
    """The judge's reply, from the cache when this judge already answered this exact prompt."""
    key = hashlib.sha256(json.dumps([judge.identity, prompt]).encode()).hexdigest()
    path = cache_dir() / "judge" / key[:2] / f"{key}.json"
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        return Reply(saved["text"], 0, cached=True)
    reply = judge.complete(prompt)
    if reply.error is None:
        atomic_write_text(path, json.dumps({"judge": judge.identity, "text": reply.text, "tokens": reply.tokens}))
    return reply


def parse_grade(text: str | None) -> int | None:
    match = GRADE.search(text or "")
    return int(match.group(1)) if match else None


def parse_verdict(text: str | None) -> str | None:
    match = VERDICT.search(text or "")
    return match.group(1).upper() if match and match.group(1).lower() != "tie" else ("tie" if match else None)


def judge_rows(rows: list[dict], spec, instruction: str | None, base_dir: Path | None) -> dict:
    """Judge every prediction row in place (row["judge"]) and return the arm's judge figures."""
    judge = make_judge(spec, base_dir)
    start, tokens, failed, cached, consistent, paired = time.perf_counter(), 0, 0, 0, 0, 0
    for row in rows:
        question = "\n".join(x for x in (instruction, row.get("input")) if x)
        if spec.mode == "grade":
            replies = [
                ask(judge, spec.rubric.format(question=question, answer=row["prediction"], reference=row["reference"]))
            ]
            score = parse_grade(replies[0].text)
        else:  # pairwise_reference: the answer as A, then as B
            prompts = [
                spec.pairwise_prompt.format(question=question, answer_a=a, answer_b=b)
                for a, b in ((row["prediction"], row["reference"]), (row["reference"], row["prediction"]))
            ]
            replies = [ask(judge, p) for p in prompts]
            first, second = (parse_verdict(r.text) for r in replies)
            score = None
            if first and second:
                wins = ({"A": 1.0, "B": 0.0, "tie": 0.5}[first], {"B": 1.0, "A": 0.0, "tie": 0.5}[second])
                paired += 1
                consistent += wins[0] == wins[1]
                score = wins[0] if wins[0] == wins[1] else 0.5  # a judge that contradicts itself: a tie
        errors = [r.error for r in replies if r.error]
        failed += score is None
        tokens += sum(r.tokens for r in replies)
        cached += sum(r.cached for r in replies)
        row["judge"] = {
            "mode": spec.mode,
            "score": score,
            "replies": [r.text for r in replies],
            "error": errors[0] if errors else (None if score is not None else "unparseable reply"),
        }
    figures = {
        "judge_seconds": round(time.perf_counter() - start, 3),
        "judge_tokens": tokens,
        "judge_failed_items": failed,
    }
    if spec.mode == "pairwise_reference":
        figures["judge_position_consistency"] = round(consistent / paired, 6) if paired else None
    reasons: dict[str, int] = {}
    for row in rows:
        if row["judge"]["score"] is None:
            reasons[row["judge"]["error"]] = reasons.get(row["judge"]["error"], 0) + 1
    figures["detail"] = {
        "judge": judge.identity,
        "mode": spec.mode,
        "items": len(rows),
        "failed": failed,
        "failures": reasons,
        "cached_replies": cached,
    }
    return figures
