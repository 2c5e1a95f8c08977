"""The Fine-tune tab through the running app: the scripting API and a browser run with a live loss chart."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

TINY = {"task": "causal-lm", "base": "scratch-gpt2", "dataset": "canterbury", "scratch_size": "tiny", "seq_len": 32,
        "batch_size": 4, "max_steps": 8, "logging_steps": 2, "eval_steps": 0, "bleu_samples": 2, "eval_before": False,
        "learning_rate": 1e-3, "test_samples": 40}


def _wait(client, run_id, states, timeout=180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = client.predict(run_id, api_name="/train_status")
        if st["state"] in states:
            return st
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} stuck: {st}")


def test_api_start_status_cancel_and_runs(client):
    run_id = client.predict(TINY, api_name="/train_start")
    st = _wait(client, run_id, {"finished", "failed", "cancelled"})
    assert st["state"] == "finished", st
    assert st["summary"].startswith("perplexity") and st["result"]["steps"] == 8
    assert client.predict(run_id, api_name="/train_cancel")["state"] == "finished"  # nothing to stop: unchanged
    listed = client.predict(api_name="/runs")
    assert any(r["id"] == run_id and r["state"] == "finished" and r["config"]["base"] == "scratch-gpt2" for r in listed)


def test_api_start_with_no_settings_plans_the_two_minute_demo(client):
    """`/train_start` with {} is the demo: a few LoRA steps on a data sample, evaluated on a small sample whose
    progress the status shows (the full recipe planned 257 steps and an ETA of 34 minutes on this CPU)."""
    from models.training.config import FULL, recipe

    run_id = client.predict({}, api_name="/train_start")
    try:
        cfg = next(r["config"] for r in client.predict(api_name="/runs") if r["id"] == run_id)
        assert cfg["method"] == "lora" and cfg["base"] == "smollm2-135m-instruct"
        assert cfg["max_steps"] * cfg["batch_size"] * cfg["seq_len"] <= 4096  # 10 steps of 4 x 64 tokens
        assert 0 < cfg["test_samples"] <= 8 and cfg["bleu_samples"] <= 2
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:  # the evaluation of the base model counts its blocks
            st = client.predict(run_id, api_name="/train_status")
            if "/8 blocks" in (st.get("phase") or "") or st["state"] not in ("queued", "running"):
                break
            time.sleep(0.5)
        assert "evaluating the base model on the test split" in st["phase"] and "/8 blocks" in st["phase"], st
    finally:
        client.predict(run_id, api_name="/train_cancel")
    full = client.predict({"preset": "full", "max_steps": 1, "eval_before": False}, api_name="/train_start")
    client.predict(full, api_name="/train_cancel")
    cfg = next(r["config"] for r in client.predict(api_name="/runs") if r["id"] == full)
    assert cfg["method"] == "full" and cfg["batch_size"] == recipe("causal-lm", FULL).batch_size


def test_api_errors_are_messages_not_tracebacks(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="learning rate"):
        client.predict(TINY | {"learning_rate": 3.0}, api_name="/train_start")
    with pytest.raises(AppError, match="not a run id"):
        client.predict("../../etc", api_name="/train_status")
    with pytest.raises(AppError, match="unknown setting"):
        client.predict(TINY | {"colour": "red"}, api_name="/train_start")


def _points(page) -> int:
    return page.evaluate("""() => {
        const plot = document.querySelector('#ft-loss .js-plotly-plot');
        if (!plot || !plot.data || !plot.data.length) return 0;
        return plot.data[0].x.length;
    }""")


def _choose(page, elem_id: str, text: str) -> None:
    page.click(f"#{elem_id} input")
    page.get_by_role("option", name=text).first.click()


@pytest.mark.browser
def test_browser_starts_a_run_and_the_loss_chart_updates(page, screenshot_dir):
    page.get_by_role("tab", name="Fine-tune").click()
    _choose(page, "ft-base", "GPT-2 from scratch")
    _choose(page, "ft-dataset", "Canterbury")
    expect(page.locator("#ft-data-info")).to_contain_text("lines", timeout=60_000)
    page.get_by_text("Hyper-parameters").click()
    for name, value in {"max_steps": "400", "batch_size": "2", "seq_len": "32", "logging_steps": "1",
                        "eval_steps": "0", "bleu_samples": "2", "learning_rate": "0.001"}.items():
        box = page.locator(f"#ft-{name} input")
        box.fill(value)
        box.press("Tab")
    page.locator("#ft-eval_before input").uncheck()
    page.get_by_text("Run this on a cluster").click()
    expect(page.locator("#ft-command")).to_contain_text("--max-steps 400")
    page.click("#ft-start")
    expect(page.locator("#ft-status")).to_contain_text("running", timeout=120_000)
    page.wait_for_function("() => { const p = document.querySelector('#ft-loss .js-plotly-plot');"
                           " return p && p.data && p.data[0].x.length >= 3; }", timeout=120_000)
    first = _points(page)
    page.wait_for_function(f"() => document.querySelector('#ft-loss .js-plotly-plot').data[0].x.length > {first}",
                           timeout=60_000)  # the chart keeps growing while the run trains
    expect(page.locator("#ft-status")).to_contain_text("ETA")
    page.screenshot(path=str(screenshot_dir / "finetune.png"), full_page=True)
    page.click("#ft-cancel")
    expect(page.locator("#ft-status")).to_contain_text("cancelled", timeout=60_000)
    # a reload reconnects to the newest run from its files
    page.reload()
    page.get_by_role("tab", name="Fine-tune").click()
    expect(page.locator("#ft-status")).to_contain_text("cancelled", timeout=60_000)
    expect(page.locator("#ft-loss .js-plotly-plot")).to_be_visible(timeout=30_000)
    assert _points(page) >= first
    # the cancelled run kept a checkpoint of the step it stopped at: Resume continues it
    stopped = _points(page)
    page.click("#ft-resume")
    expect(page.locator("#ft-status")).to_contain_text("resumed from step", timeout=120_000)
    page.wait_for_function(f"() => document.querySelector('#ft-loss .js-plotly-plot').data[0].x.length > {stopped}",
                           timeout=120_000)
    xs = page.evaluate("() => document.querySelector('#ft-loss .js-plotly-plot').data[0].x")
    assert xs == list(range(1, len(xs) + 1))  # no step twice, none missing
    page.get_by_text("Full fine-tuning or LoRA").click()
    page.screenshot(path=str(screenshot_dir / "finetune-resumed.png"), full_page=True)
    page.click("#ft-cancel")
    expect(page.locator("#ft-status")).to_contain_text("cancelled", timeout=60_000)


def _fake_run(home, run_id: str, state: str, created: float, metrics: list[dict]) -> None:
    """A run folder as the trainer leaves it (config, status, metrics), without training."""
    import json

    from models.training.config import RunConfig

    folder = home / "runs" / run_id
    folder.mkdir(parents=True)
    cfg = {k: v for k, v in TINY.items()}
    (folder / "config.json").write_text(RunConfig(**cfg).to_json())
    (folder / "status.json").write_text(json.dumps({"state": state, "created": created, "device": "cpu",
                                                    "max_steps": 8, "step": 8 if state == "finished" else 3}))
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics))


@pytest.mark.browser
def test_browser_sample_is_verbatim_and_resume_only_for_an_unfinished_run(page, lmlab_home):
    """The before/after texts print as they are (Alice's `quote' passages became grey code boxes, '*' emphasis),
    and Resume / Start over show only for a run that did not finish: not before any run, nor after a finished
    one; a cancelled run with no checkpoint offers Start over and says why."""
    import shutil

    texts = {"example_prompt": "Alice said `quote' and *not emphasis*", "example_reference": " _the_ <b>Queen</b>",
             "example_output": " a `b` c"}
    fakes = {"zz-finished-verbatim": "finished", "zz-cancelled-no-checkpoint": "cancelled"}
    future = time.time() + 10**6  # newest: the tab shows the newest run on load
    try:
        page.get_by_role("tab", name="Fine-tune").click()
        expect(page.locator("#ft-status")).to_contain_text("o", timeout=30_000)  # the first timer tick came
        if "No runs yet" in page.locator("#ft-status").inner_text():  # this session has no run yet
            expect(page.locator("#ft-resume")).to_be_hidden()
            expect(page.locator("#ft-restart")).to_be_hidden()
        _fake_run(lmlab_home, "zz-finished-verbatim", "finished", future,
                  [{"event": "eval_before", "loss": 5.0, "perplexity": 148.4, **texts},
                   {"event": "eval_after", "loss": 4.0, "perplexity": 54.6, **texts, "example_output": " d *e* f"}])
        page.reload()
        page.get_by_role("tab", name="Fine-tune").click()
        expect(page.locator("#ft-status")).to_contain_text("finished", timeout=30_000)
        sample = page.locator("#ft-sample")
        expect(sample).to_contain_text("Prompt: Alice said `quote' and *not emphasis*", timeout=30_000)
        expect(sample).to_contain_text("Real continuation:  _the_ <b>Queen</b>")
        expect(sample).to_contain_text("Before:  a `b` c")
        expect(sample).to_contain_text("After:  d *e* f")
        assert sample.locator("code, em, strong").count() == 0  # no Markdown read into them
        expect(page.locator("#ft-resume")).to_be_hidden()
        expect(page.locator("#ft-restart")).to_be_hidden()

        _fake_run(lmlab_home, "zz-cancelled-no-checkpoint", "cancelled", future + 1, [])
        page.reload()
        page.get_by_role("tab", name="Fine-tune").click()
        expect(page.locator("#ft-status")).to_contain_text("cancelled", timeout=30_000)
        expect(page.locator("#ft-restart")).to_be_visible(timeout=30_000)
        expect(page.locator("#ft-resume")).to_be_hidden()
        expect(page.locator("#ft-resume-note")).to_contain_text("cannot be resumed: it saved no checkpoint")
    finally:  # later tests read the newest run
        for run_id in fakes:
            shutil.rmtree(lmlab_home / "runs" / run_id, ignore_errors=True)
