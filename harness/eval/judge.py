"""LLM-as-a-judge for generation tasks: a local model or an OpenAI-compatible HTTP endpoint
(what vLLM, TGI, llama.cpp and hosted APIs serve) grades each answer.

Modes: `grade` (a 1-10 grade on a rubric; the parsed grade and the raw reply kept per item),
`pairwise_reference` (the answer against the reference answer, asked in both orders: position
bias shows as a judge that contradicts itself, which counts as a tie and lowers the
position-consistency rate) and `pairwise_arms` (arm against arm once every arm has finished:
harness.eval.judge_pairs, with the same both-orders question). Replies are cached on disk by hash
of (judge, prompt), so a rerun costs nothing; failures are not cached, so a rerun retries them.
Every request to an endpoint is bounded (total deadline, reply size, JSON depth, reply shape) and
a few run at once; a failed or unparseable item is counted by failure class and left out of the
mean; it never fails the arm. The API key is read from the environment variable the YAML names
and goes nowhere else.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import statistics
import threading
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
    """POST {base_url}/chat/completions, greedy, `max_tokens` tokens. Every request is bounded: a
    total deadline of `timeout_s` (a watchdog shuts the socket down, so a server trickling one byte
    a second cannot stretch it), at most `max_response_bytes` read, a JSON nesting limit, and a
    reply checked against the shape of a chat completion (`usage` included) before it is used."""

    def __init__(self, spec):
        self.url = spec.base_url.rstrip("/") + "/chat/completions"
        self.model, self.timeout_s, self.max_tokens = spec.model, spec.timeout_s, spec.max_tokens
        self.max_bytes, self.concurrency = spec.max_response_bytes, spec.concurrency
        self._key = os.environ.get(spec.api_key_env) if spec.api_key_env else None
        if spec.api_key_env and not self._key:
            raise HarnessError(
                f"budget.judge.api_key_env: the environment variable {spec.api_key_env} is not set; "
                "export it before the run"
            )
        self.identity = f"http {self.url} {self.model}"

    def complete(self, prompt: str) -> Reply:
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": self.max_tokens,
            "temperature": 0,
        }
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        status, raw, error = self._post(json.dumps(body).encode(), headers)
        if error:
            return Reply(None, error=error)
        if status >= 400:
            return Reply(None, error=f"HTTP {status}")
        return read_completion(raw)

    def _post(self, body: bytes, headers: dict) -> tuple[int, bytes, str | None]:
        """(status, body, None), or (0, b"", the failure class) when the request could not finish."""
        import http.client
        import socket
        import urllib.parse

        parts = urllib.parse.urlsplit(self.url)
        connection_type = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = connection_type(parts.hostname, parts.port, timeout=self.timeout_s)
        expired = threading.Event()

        def expire():  # the total deadline: wake whatever read or write is blocked
            expired.set()
            sock = conn.sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        watchdog = threading.Timer(self.timeout_s, expire)
        watchdog.daemon = True
        watchdog.start()
        try:
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            if (response.length or 0) > self.max_bytes:
                return 0, b"", "response too large"
            chunks, size = [], 0
            while chunk := response.read1(65536):
                size += len(chunk)
                if size > self.max_bytes:
                    return 0, b"", "response too large"
                chunks.append(chunk)
            if expired.is_set():
                return 0, b"", "timeout"
            return response.status, b"".join(chunks), None
        except (OSError, http.client.HTTPException) as err:  # refused, reset, timed out, cut by the watchdog
            if expired.is_set() or isinstance(err, TimeoutError):
                return 0, b"", "timeout"
            return 0, b"", f"connection: {type(err).__name__}"
        finally:
            watchdog.cancel()
            conn.close()


MAX_JSON_DEPTH = 32  # a chat completion nests 4-6 deep (logprobs a few more)
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(rb"[\[\]{}]")


def json_depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects in a JSON text, strings skipped: checked before
    json.loads, whose recursion a deeply nested reply would exhaust."""
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub(b'""', raw)):
        depth += 1 if match.group() in (b"[", b"{") else -1
        deepest = max(deepest, depth)
    return deepest


def read_completion(raw: bytes) -> Reply:
    """A chat-completion body as a Reply; anything off its shape is a failure class, never an exception."""
    if json_depth(raw) > MAX_JSON_DEPTH:
        return Reply(None, error="response JSON nested too deep")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return Reply(None, error="response is not JSON")
    try:
        text = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return Reply(None, error="response has no choices[0].message.content")
    if not isinstance(text, str):
        return Reply(None, error="response has no choices[0].message.content")
    usage = data.get("usage") if isinstance(data, dict) else None
    tokens = usage.get("total_tokens", 0) if isinstance(usage, dict) else (0 if usage is None else "?")
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
        return Reply(None, error="usage.total_tokens is not a count")
    return Reply(text, tokens)


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


# Keys an arm's own result does not depend on (how fast, run-level steps), and keys added after
# results existed, left out of the hash at their defaults so those results keep theirs.
_RUN_LEVEL = ("concurrency", "calibration", "vs")
_ADDED_WITH_DEFAULTS = {
    "max_response_bytes": 1_000_000,
    "reliability": {"max_failure_rate": 0.2, "min_position_consistency": 0.6},
}


def arm_identity(judge: dict) -> dict | None:
    """What of budget.judge enters an arm's hash: nothing for pairwise_arms (the arms are judged
    after they finish, from their saved answers, so adding such a judge reruns no arm)."""
    if judge.get("mode") == "pairwise_arms":
        return None
    return {
        k: v
        for k, v in judge.items()
        if k not in _RUN_LEVEL and not (k in _ADDED_WITH_DEFAULTS and v == _ADDED_WITH_DEFAULTS[k])
    }


UNREACHABLE = ("timeout", "connection: ")
SKIPPED = "skipped: the endpoint did not answer the requests before it"


class Asker:
    """Asks a judge through the on-disk cache, `concurrency` requests at a time (1 for a local
    model). After 2 x concurrency timeouts or refused connections in a row, with no answer
    between, the endpoint is taken as down and the remaining prompts fail at once (SKIPPED), so a
    silent server costs about two deadlines, not one per item."""

    def __init__(self, judge):
        self.judge = judge
        self.concurrency = getattr(judge, "concurrency", 1)
        self._lock, self._unreachable_in_a_row = threading.Lock(), 0
        self._prompt_locks: dict[str, threading.Lock] = {}

    def ask(self, prompt: str) -> Reply:
        """One prompt at a time per prompt: the same question asked twice at once (the same pair of
        answers on two items) is sent once and the second reads the first's cache entry."""
        key = hashlib.sha256(json.dumps([self.judge.identity, prompt]).encode()).hexdigest()
        with self._lock:
            prompt_lock = self._prompt_locks.setdefault(key, threading.Lock())
        with prompt_lock:
            return self._ask(key, prompt)

    def _ask(self, key: str, prompt: str) -> Reply:
        path = cache_dir() / "judge" / key[:2] / f"{key}.json"
        if path.is_file():
            saved = json.loads(path.read_text(encoding="utf-8"))
            return Reply(saved["text"], 0, cached=True)
        if self._unreachable_in_a_row >= 2 * self.concurrency:
            return Reply(None, error=SKIPPED)
        reply = self.judge.complete(prompt)
        with self._lock:
            down = reply.error is not None and reply.error.startswith(UNREACHABLE)
            self._unreachable_in_a_row = self._unreachable_in_a_row + 1 if down else 0
        if reply.error is None:
            atomic_write_text(
                path, json.dumps({"judge": self.judge.identity, "text": reply.text, "tokens": reply.tokens})
            )
        return reply

    def map(self, work, items: list) -> list:
        """work(item) for every item, at most `concurrency` at once, results in item order."""
        if self.concurrency <= 1 or len(items) <= 1:
            return [work(item) for item in items]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="judge") as pool:
            return list(pool.map(work, items))


def ask(judge, prompt: str) -> Reply:
    """The judge's reply, from the cache when this judge already answered this exact prompt."""
    return Asker(judge).ask(prompt)


def parse_grade(text: str | None) -> int | None:
    match = GRADE.search(text or "")
    return int(match.group(1)) if match else None


def parse_verdict(text: str | None) -> str | None:
    match = VERDICT.search(text or "")
    return match.group(1).upper() if match and match.group(1).lower() != "tie" else ("tie" if match else None)


WIN_FIRST = {"A": 1.0, "B": 0.0, "tie": 0.5}  # the first-order verdict, as the first answer's score
WIN_SECOND = {"B": 1.0, "A": 0.0, "tie": 0.5}  # the swapped order


def both_orders(
    asker: Asker, spec, question: str, first: str, second: str
) -> tuple[float | None, list[Reply], bool | None]:
    """`first` against `second`, asked as A then as B: first's score (1 win, 0 loss, 0.5 a tie or a
    judge that contradicts itself across the orders), the replies, and whether the two verdicts
    agree (None when a reply failed or had no verdict: then the score is None too)."""
    prompts = [
        spec.pairwise_prompt.format(question=question, answer_a=a, answer_b=b)
        for a, b in ((first, second), (second, first))
    ]
    replies = [asker.ask(p) for p in prompts]
    verdicts = [parse_verdict(r.text) for r in replies]
    if None in verdicts:
        return None, replies, None
    wins = (WIN_FIRST[verdicts[0]], WIN_SECOND[verdicts[1]])
    return (wins[0] if wins[0] == wins[1] else 0.5), replies, wins[0] == wins[1]


def failure_of(replies: list[Reply], score) -> str | None:
    """The item's failure class: the first reply's error, or an unparseable reply, or None."""
    errors = [r.error for r in replies if r.error]
    return errors[0] if errors else (None if score is not None else "unparseable reply")


def judge_rows(rows: list[dict], spec, instruction: str | None, base_dir: Path | None) -> dict:
    """Judge every prediction row in place (row["judge"]) and return the arm's judge figures."""
    asker = Asker(make_judge(spec, base_dir))
    start = time.perf_counter()

    def judge_one(row: dict) -> tuple[list[Reply], bool | None]:
        question = "\n".join(x for x in (instruction, row.get("input")) if x)
        if spec.mode == "grade":
            prompt = spec.rubric.format(question=question, answer=row["prediction"], reference=row["reference"])
            replies, agreed = [asker.ask(prompt)], None
            score = parse_grade(replies[0].text)
        else:  # pairwise_reference: the answer as A, then as B
            score, replies, agreed = both_orders(asker, spec, question, row["prediction"], row["reference"])
        row["judge"] = {
            "mode": spec.mode,
            "score": score,
            "replies": [r.text for r in replies],
            "error": failure_of(replies, score),
        }
        return replies, agreed

    done = asker.map(judge_one, rows)
    agreements = [agreed for _, agreed in done if agreed is not None]
    failures: dict[str, int] = {}
    for row in rows:
        if row["judge"]["score"] is None:
            failures[row["judge"]["error"]] = failures.get(row["judge"]["error"], 0) + 1
    failed = sum(failures.values())
    figures = {
        "judge_seconds": round(time.perf_counter() - start, 3),
        "judge_tokens": sum(r.tokens for replies, _ in done for r in replies),
        "judge_failed_items": failed,
    }
    if spec.mode == "pairwise_reference":
        figures["judge_position_consistency"] = round(sum(agreements) / len(agreements), 6) if agreements else None
    grades = [row["judge"]["score"] for row in rows if row["judge"]["score"] is not None]
    figures["detail"] = {
        "judge": asker.judge.identity,
        "mode": spec.mode,
        "items": len(rows),
        "failed": failed,
        "failures": failures,
        "cached_replies": sum(r.cached for replies, _ in done for r in replies),
        "score_spread": round(statistics.pstdev(grades), 6) if len(grades) > 1 else None,
    }
    return figures
