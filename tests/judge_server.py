"""A real OpenAI-compatible chat endpoint on 127.0.0.1 serving a tiny model, for the judge tests.

Not a test file. The first path segment picks how it answers, so one server covers every case:
  /digits/v1  replies constrained to one of the tokens 1-9 (like a server's grammar/structured output)
  /ab/v1      replies constrained to A or B (pairwise verdicts)
  /free/v1    the model's own greedy reply (what a local judge with the same model says)
  /error/v1   HTTP 500
Rules, not the model: every reply known in advance, no generation, nothing timed:
  /longer/v1   A when answer A is the longer, B when it is shorter, tie when equal (the pairwise
               prompt's "Answer A:"/"Answer B:" lines): a judge that agrees with a length metric
  /always_a/v1 A, whatever the order: position bias, consistency 0
  /words/v1    "excellent" (no digit: an unparseable grade)
  /huge/v1     a 2 MB reply whose content starts with "7"
  /deep/v1     a body of 100,000 nested JSON arrays
  /badusage/v1 grade 7 with usage.total_tokens "many"
  /trickle/v1  a valid grade-7 reply sent one byte per 20 ms after 300 bytes of white space (6 s):
               a per-read timeout never fires, a total deadline does
  /hold/v1     counts requests in flight, sets `held_enough` once `hold_target` are, and answers
               503 when the test sets `let_go`: concurrency seen by events, not by clocks
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from harness.eval.judge import generate_reply


class JudgeServer:
    def __init__(self, model_dir):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        vocab = self.tokenizer.get_vocab()
        self.allowed = {
            "digits": [vocab[str(d)] for d in range(1, 10)],
            "ab": [vocab["A"], vocab["B"]],
        }
        self.requests, self.headers, self.lock = 0, [], threading.Lock()
        self.in_flight = self.peak_in_flight = 0
        self.hold_target, self.held_enough, self.let_go = 1, threading.Event(), threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def base_url(self, behaviour: str) -> str:
        return f"{self.url}/{behaviour}/v1"

    def stop(self):
        self.let_go.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def answer(self, behaviour: str, body: dict) -> tuple[int, dict]:
        if behaviour == "error":
            return 500, {"error": {"message": "the judge is down"}}
        prompt = body["messages"][-1]["content"]
        if behaviour in RULES:
            return 200, RULES[behaviour](prompt)
        if behaviour == "hold":
            with self.lock:
                self.in_flight += 1
                self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
                if self.in_flight >= self.hold_target:
                    self.held_enough.set()
            self.let_go.wait()
            with self.lock:
                self.in_flight -= 1
            return 503, {"error": {"message": "held"}}
        kwargs = {}
        if behaviour in self.allowed:
            allowed = self.allowed[behaviour]
            kwargs["prefix_allowed_tokens_fn"] = lambda batch_id, ids: allowed
        with self.lock:  # one generation at a time, like a single-slot server
            text, tokens = generate_reply(self.model, self.tokenizer, prompt, int(body.get("max_tokens", 8)), **kwargs)
        return 200, {
            "object": "chat.completion",
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"total_tokens": tokens},
        }

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                behaviour = self.path.strip("/").split("/")[0]
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests += 1
                    server.headers.append(dict(self.headers))
                status, payload = server.answer(behaviour, body)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                lead = b" " * 300 if behaviour == "trickle" else b""
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(lead) + len(data)))
                    self.end_headers()
                    for byte in lead:  # pacing a hostile server, not a test's clock
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(0.02)
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (timeout)

            def log_message(self, *args):
                pass

        return Handler


def _reply(text: str, usage=None) -> dict:
    return {
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"total_tokens": 3} if usage is None else usage,
    }


def _longer(prompt: str) -> dict:
    a, b = (re.search(rf"^Answer {x}: (.*)$", prompt, re.MULTILINE).group(1) for x in "AB")
    return _reply("A" if len(a) > len(b) else "B" if len(a) < len(b) else "tie")


RULES = {
    "longer": _longer,
    "always_a": lambda prompt: _reply("A"),
    "words": lambda prompt: _reply("excellent"),
    "huge": lambda prompt: _reply("7" + " " * 2_000_000),
    "deep": lambda prompt: b"[" * 100_000 + b"]" * 100_000,
    "badusage": lambda prompt: _reply("7", usage={"total_tokens": "many"}),
    "trickle": lambda prompt: _reply("7"),
}
