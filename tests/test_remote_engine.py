"""The remote engine against a real vLLM server (vLLM for CPUs, serving the embedded SmolLM2).

The server starts once for this module from the environment ``make engines`` installs; without it the
tests skip and say so (``LMLAB_REQUIRE_ENGINE=1``, set by CI, turns that into a failure). The last test
kills the server mid-stream, so it stays last.
"""

from __future__ import annotations

import re
import signal
import threading
import time

import httpx
import pytest

from tests.conftest import missing

pytestmark = [pytest.mark.engine, pytest.mark.slow]

NAME = "smollm2-135m-instruct"
KEY = "remote:" + NAME
ENABLE = ("needs vLLM for CPUs, which is not installed: `make engines` installs it once (~3.5 GB, 6-11 min) "
          "outside the clone, then `make test` runs these")
GEN = dict(model_key=KEY, temperature=0.8, top_p=0.95, top_k=50, max_new_tokens=24, repetition_penalty=1.0,
           seed=7, chat=False)


@pytest.fixture(scope="module")
def vllm(tmp_path_factory):
    """(API root, server process) of a vLLM server on a free port."""
    from models.core import assets
    from models.engines import vllm_server
    from tests.app_process import free_port

    if not vllm_server.installed():
        missing(ENABLE, "LMLAB_REQUIRE_ENGINE")
    port = free_port()
    log = tmp_path_factory.mktemp("vllm") / "vllm.log"
    started = time.monotonic()
    proc = vllm_server.start(assets.path("smollm2-135m-instruct") / "model", port, NAME, log_path=log)
    print(f"\nvLLM started in {time.monotonic() - started:.0f} s")
    yield f"http://127.0.0.1:{port}/v1", proc
    vllm_server.stop(proc)


@pytest.fixture(scope="module")
def engine(vllm):
    from models.engines.remote import RemoteEngine

    e = RemoteEngine(vllm[0], NAME)
    yield e
    e.close()


@pytest.fixture(scope="module")
def remote_app(vllm, tmp_path_factory):
    """The app, pointed at the server (a short silence limit, so the slow-server test is quick)."""
    from tests.app_process import running_app

    log = tmp_path_factory.mktemp("remote-app") / "app.log"
    with running_app("--offline", "--engine-url", vllm[0], "--engine-model", NAME, log_path=log, timeout=240,
                     env={"LMLAB_ENGINE_TIMEOUT_S": "15"}) as (url, proc):
        yield url, proc


@pytest.fixture(scope="module")
def remote_client(remote_app):
    from gradio_client import Client

    return Client(remote_app[0], verbose=False)


def _running(vllm) -> float:
    """The server's count of requests it is computing now (its Prometheus metric)."""
    text = httpx.get(vllm[0].removesuffix("/v1") + "/metrics", timeout=5).text
    found = re.findall(r"^vllm:num_requests_running(?:\{[^}]*\})? ([0-9.e+]+)$", text, re.M)
    assert found, "the server reports no vllm:num_requests_running"
    return sum(float(x) for x in found)


def _settings(**kw):
    from models.generation.generator import SamplingSettings

    return SamplingSettings(**{k: v for k, v in dict(GEN, **kw).items() if k != "model_key" and k != "chat"})


def _all_at_once(n: int, student) -> list:
    """``student(k)`` for k in 0..n-1, each in its own thread, released together; each result or exception."""
    results: list = [None] * n
    barrier = threading.Barrier(n)

    def run(k):
        barrier.wait()
        try:
            results[k] = student(k)
        except Exception as exc:  # noqa: BLE001 - the caller counts them
            results[k] = exc

    threads = [threading.Thread(target=run, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_same_seed_same_text_and_tokens_with_their_alternatives(engine):
    first = list(engine.stream("Once upon a time,", _settings()))
    again = list(engine.stream("Once upon a time,", _settings()))[-1]
    other = list(engine.stream("Once upon a time,", _settings(seed=8)))[-1]
    last = first[-1]
    assert len(first) > 3 and last.done and last.finish_reason in ("length", "eos")
    assert last.text == again.text and last.text != other.text
    assert "".join(t.text for t in last.tokens) == last.text and len(last.tokens) == 24
    assert last.prompt_tokens > 0 and last.engine.startswith("served by")
    for t in last.tokens:
        assert t.logprob <= 0 and len(t.alternatives) == 5
        assert all(a[1] >= b[1] for a, b in zip(t.alternatives, t.alternatives[1:], strict=False))


def test_streamed_logprobs_equal_the_non_streamed_ones(engine, vllm):
    s = _settings(temperature=0.0, max_new_tokens=16)
    streamed = list(engine.stream("The capital of France is", s))[-1].tokens
    body = engine._body("The capital of France is", s, 16, 5, stream=False)
    whole = httpx.post(f"{vllm[0]}/completions", json=body, timeout=120).json()["choices"][0]["logprobs"]
    assert [t.text for t in streamed] == whole["tokens"]
    assert [t.logprob for t in streamed] == pytest.approx(whole["token_logprobs"], abs=1e-4)


def test_the_next_token_view_shows_the_servers_top_20(engine):
    rows, note = engine.next_token("The capital of France is")
    assert len(rows) == 20 and rows[0][0] == " Paris"
    shown = sum(p for _, p in rows)
    assert 0 < shown < 1 and f"{1 - shown:.1%}" in note and "before temperature" in note


def test_stop_aborts_the_request_on_the_server(engine, vllm):
    cancel = threading.Event()
    events = engine.stream("Write a very long story about a dragon.", _settings(max_new_tokens=1000), cancel)
    next(events)
    assert _running(vllm) == 1
    cancel.set()
    last = list(events)[-1]
    assert last.done and last.finish_reason == "stopped" and len(last.tokens) < 1000
    deadline = time.monotonic() + 30
    while _running(vllm) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _running(vllm) == 0, "the server kept computing the stopped request"


def test_a_refused_setting_shows_the_servers_reason(engine):
    from models.core.errors import ServerError

    with pytest.raises(ServerError, match="refused the request.*(context|2048|length)"):
        list(engine.stream("word " * 3000, _settings(max_new_tokens=10)))  # 3,000 tokens: past 2,048


def test_a_server_that_is_down_says_so():
    from models.core.errors import ServerError
    from models.engines.remote import RemoteEngine
    from tests.app_process import free_port

    down = RemoteEngine(f"http://127.0.0.1:{free_port()}/v1", NAME)
    with pytest.raises(ServerError, match="not answering.*running"):
        list(down.stream("Hello", _settings()))
    with pytest.raises(ServerError, match="not answering"):
        down.next_token("Hello")


def test_the_app_streams_the_servers_model(remote_client):
    picker = remote_client.view_api(return_format="dict", print_info=False)
    assert picker  # the API lists its endpoints
    job = remote_client.submit("Once upon a time,", *GEN.values(), api_name="/generate")
    updates = list(job)
    text, html, status = job.outputs()[-1]
    assert len(updates) >= 3 and text and "Done" in status and "served by 127.0.0.1" in status
    assert html.count("class='tok'") == 24 and "top-5" in html
    again = remote_client.predict("Once upon a time,", *GEN.values(), api_name="/generate")[0]
    assert again == text  # same seed, same text, through the app
    plot, table, context = remote_client.predict("The capital of France is", "", KEY, 0.7, 0.9, 10, 1.0,
                                        api_name="/next_token")
    rows = table["data"]
    assert len(rows) == 20 and rows[0][1] == "␣Paris" and rows[0][3] == "—"
    assert "not shown" in str(plot) and "The capital of France is" in context


def test_views_that_need_the_insides_say_so(remote_client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="runs on a model server.*choose SmolLM2"):
        remote_client.predict("The capital of France is", "", KEY, 5, api_name="/logit_lens")


def test_thirty_students_through_the_app(remote_app, engine):
    """A class of 30 presses Generate on the server's model at once: all served, each its own seed's text."""
    from gradio_client import Client

    n = 30
    args = [dict(GEN, seed=k, max_new_tokens=20) for k in range(n)]
    pool = [Client(remote_app[0], verbose=False) for _ in range(n)]
    results = _all_at_once(n, lambda k: pool[k].predict("Once upon a time,", *args[k].values(), api_name="/generate"))
    errors = [r for r in results if isinstance(r, Exception)]
    assert not errors, errors[:3]
    assert all("Done" in r[2] and r[1].count("class='tok'") == 20 for r in results)
    for k in (0, 17):  # the text a student gets in a class is the one it gets alone
        alone = list(engine.stream("Once upon a time,", _settings(seed=k, max_new_tokens=20)))[-1].text
        assert results[k][0] == alone


def test_more_students_than_the_server_runs_at_once_wait_their_turn(vllm):
    """The server runs 32 sequences at once and queues the rest, sending them nothing meanwhile: with a
    silence limit shorter than that wait, the queued students still get their whole text, not an error."""
    from models.engines.remote import RemoteEngine

    impatient = RemoteEngine(vllm[0], NAME, read_timeout_s=2.0)
    results = _all_at_once(40, lambda k: list(impatient.stream("Once upon a time,",
                                                               _settings(seed=k, max_new_tokens=48)))[-1])
    impatient.close()
    errors = [r for r in results if isinstance(r, Exception)]
    assert not errors, errors[:3]
    assert all(r.done and r.tokens for r in results)
    waited = sorted(r.first_token_seconds for r in results)
    assert waited[-1] > 2.0, f"no request waited longer than the silence limit ({waited[-5:]}): nothing was tested"


@pytest.mark.browser
def test_browser_generate_through_the_server(browser, remote_app, screenshot_dir):
    """A student's page on the server's model: streamed coloured tokens with their top-5, the same text for
    the same seed, the next-token chart of the server's top 20, Stop; at a projector's and a narrow width."""
    for width in (1400, 800):
        context = browser.new_context(viewport={"width": width, "height": 900})
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.goto(remote_app[0])
        page.wait_for_selector("#gen-go", timeout=120_000)
        assert "on the model server" in page.locator("#gen-model input").input_value()
        page.locator("#gen-prompt textarea").fill("Once upon a time, in a small village by the sea,")
        texts = []
        for _ in range(2):  # the seed (0 by default) gives the same text twice
            page.locator("#gen-go").click()
            # The status leaves "Done" when the new stream starts (80 tokens take seconds), then returns.
            page.wait_for_function("!document.querySelector('#gen-status').innerText.includes('Done')",
                                   timeout=60_000)
            page.wait_for_function("document.querySelector('#gen-status').innerText.includes('Done')",
                                   timeout=120_000)
            texts.append(page.locator("#gen-output textarea").input_value())
        assert texts[0] and texts[0] == texts[1]
        chip = page.locator("#gen-tokens .tok").first
        assert page.locator("#gen-tokens .tok").count() == 80
        assert "top-5:" in chip.get_attribute("data-tip") and "background" in chip.get_attribute("style")
        assert "served by 127.0.0.1" in page.locator("#gen-status").inner_text()
        page.locator("#gen-model").scroll_into_view_if_needed()
        page.screenshot(path=str(screenshot_dir / f"remote-generate-{width}.png"), full_page=False)
        page.locator("#gen-peek").click()
        page.wait_for_selector("#gen-next-plot .js-plotly-plot", timeout=60_000)
        assert "not shown" in page.locator("#gen-next-plot").inner_text()
        page.locator("#gen-next-plot").scroll_into_view_if_needed()
        page.screenshot(path=str(screenshot_dir / f"remote-next-token-{width}.png"), full_page=False)

        page.locator("#gen-max-new input[type=number]").fill("500")
        page.locator("#gen-max-new input[type=number]").press("Enter")
        page.locator("#gen-go").click()
        out = page.locator("#gen-output textarea")
        page.wait_for_function("document.querySelector('#gen-status').innerText.includes('Generating')",
                               timeout=60_000)
        page.locator("#gen-stop").click()
        page.wait_for_function("document.querySelector('#gen-status').innerText.includes('stopped by you')",
                               timeout=30_000)
        assert 0 < len(out.input_value()) and page.locator("#gen-tokens .tok").count() < 500
        context.close()


def test_a_silent_server_and_a_killed_one_give_clear_messages_and_local_models_still_work(vllm, remote_app,
                                                                                       remote_client, engine):
    """Paused (SIGSTOP): the app says the server has sent nothing; killed mid-stream: the text so far is
    kept and the status says the server closed the stream; a local model keeps working for everyone."""
    import os

    from gradio_client import Client
    from gradio_client.exceptions import AppError

    proc = vllm[1]
    local = dict(GEN, model_key="smollm2-135m-instruct", max_new_tokens=8, temperature=0.0)
    os.kill(proc.pid, signal.SIGSTOP)  # the API server only: its engine process keeps its own clock
    try:
        with pytest.raises(AppError, match="has sent nothing for 15 s"):
            remote_client.predict("Hello", *GEN.values(), api_name="/generate")
        text = Client(remote_app[0], verbose=False).predict("Hello", *local.values(), api_name="/generate")[0]
        assert text  # another student on a local model is served meanwhile
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    answered, deadline = None, time.monotonic() + 120
    while answered is None and time.monotonic() < deadline:  # the server works again once resumed
        try:
            answered = list(engine.stream("Hello", _settings(max_new_tokens=2)))[-1]
        except Exception as exc:  # noqa: BLE001 - the last one is reported below
            last_error = exc
            time.sleep(1)
    assert answered is not None, f"the server did not recover from the pause: {last_error}"

    job = remote_client.submit("Write a very long story about a dragon.",
                               *dict(GEN, max_new_tokens=512).values(), api_name="/generate")
    deadline = time.monotonic() + 60
    while not (job.outputs() and job.outputs()[-1][0]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert job.outputs(), f"no token arrived before the kill: {job.exception()}"
    # The app draws each token and so reads more slowly than a fast server writes: by the time its
    # first token reaches this client, the rest may already sit in the socket. Pausing the server
    # first makes the kill land mid-stream however fast the machine is.
    os.kill(proc.pid, signal.SIGSTOP)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    text, html, status = job.result(timeout=60)
    assert text and "the model server closed the stream" in status and "text so far is kept" in status
    with pytest.raises(AppError, match="not answering"):
        remote_client.predict("Hello", *GEN.values(), api_name="/generate")
    again = Client(remote_app[0], verbose=False).predict("Hello", *local.values(), api_name="/generate")[0]
    assert again  # local models are served after the kill too
