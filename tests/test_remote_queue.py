"""The remote engine waits its turn at a busy server, and still gives up on a silent or stuck one.

A small OpenAI-compatible stand-in (``http.server``) plays the server: its completions stream stays
silent until the engine has asked ``GET /models`` a given number of times (as vLLM's queue does while
it runs other students' requests), then sends two tokens. Counting the engine's questions, not
sleeping, decides when the server "gets to" the request.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from models.core.errors import ServerError
from models.engines.remote import RemoteEngine
from models.engines.requests import SamplingSettings


class _Server:
    def __init__(self, probes_before_start: int | None, models_status: int = 200):
        self.probes = 0
        self.turn = threading.Event()  # set when the queued request's turn comes
        self.probes_before_start, self.models_status = probes_before_start, models_status
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.probes += 1
                if outer.probes_before_start is not None and outer.probes >= outer.probes_before_start:
                    outer.turn.set()
                body = json.dumps({"data": [{"id": "tiny"}]}).encode()
                self.send_response(outer.models_status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                self.wfile.flush()  # headers now, tokens only when the request's turn comes
                if not outer.turn.wait(30):
                    return
                for i, word in enumerate(["Hello", " there"]):
                    chunk = {"choices": [{"text": word, "finish_reason": "length" if i else None,
                                          "logprobs": {"tokens": [word], "token_logprobs": [-0.5],
                                                       "top_logprobs": [{word: -0.5}]}}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.turn.set()
        self.httpd.shutdown()


@pytest.fixture
def server_factory():
    made = []

    def make(*args, **kw):
        made.append(_Server(*args, **kw))
        return made[-1]

    yield make
    for s in made:
        s.close()


def _stream(engine: RemoteEngine) -> list:
    return list(engine.stream("Hi", SamplingSettings(temperature=0.0, max_new_tokens=2)))


def test_a_queued_request_keeps_its_place_while_the_server_answers(server_factory):
    server = server_factory(probes_before_start=3)
    engine = RemoteEngine(server.url, "tiny", read_timeout_s=0.2, queue_limit_s=60)
    events = _stream(engine)
    assert events[-1].done and events[-1].text == "Hello there"
    assert server.probes >= 3  # silent three times, asked three times, then served


def test_a_silent_server_that_does_not_answer_fails_with_a_clear_message(server_factory):
    server = server_factory(probes_before_start=None, models_status=503)
    engine = RemoteEngine(server.url, "tiny", read_timeout_s=0.2, queue_limit_s=60)
    with pytest.raises(ServerError, match="has sent nothing for 0 s"):
        _stream(engine)
    assert server.probes >= 1


def test_a_request_that_never_starts_gives_up_after_the_queue_limit(server_factory):
    server = server_factory(probes_before_start=None)  # answers, never serves
    engine = RemoteEngine(server.url, "tiny", read_timeout_s=0.2, queue_limit_s=1.0)
    with pytest.raises(ServerError, match="is busy: this request waited 1 s for its turn"):
        _stream(engine)
