"""A real OpenAI-compatible chat endpoint on 127.0.0.1 serving a tiny model, for the judge tests.

Not a test file. The first path segment picks how it answers, so one server covers every case:
  /digits/v1  replies constrained to one of the tokens 1-9 (like a server's grammar/structured output)
  /ab/v1      replies constrained to A or B (pairwise verdicts)
  /free/v1    the model's own greedy reply (what a local judge with the same model says)
  /letters/v1 replies with no digit in them: unparseable grades
  /error/v1   HTTP 500
  /slow/v1    holds the request until the server stops (the client's timeout fires first)
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from harness.eval.judge import generate_reply


class JudgeServer:
    def __init__(self, model_dir):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        vocab = self.tokenizer.get_vocab()
        words = {i: self.tokenizer.decode([i]) for i in vocab.values()}
        self.allowed = {
            "digits": [vocab[str(d)] for d in range(1, 10)],
            "ab": [vocab["A"], vocab["B"]],
            "letters": [i for i, w in words.items() if w.strip() and not any(c.isdigit() for c in w)],
        }
        self.requests, self.headers, self.lock = 0, [], threading.Lock()
        self.release = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def base_url(self, behaviour: str) -> str:
        return f"{self.url}/{behaviour}/v1"

    def stop(self):
        self.release.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def answer(self, behaviour: str, body: dict) -> tuple[int, dict]:
        if behaviour == "error":
            return 500, {"error": {"message": "the judge is down"}}
        if behaviour == "slow":
            self.release.wait()
            return 503, {"error": {"message": "stopped"}}
        prompt = body["messages"][-1]["content"]
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
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (timeout)

            def log_message(self, *args):
                pass

        return Handler
