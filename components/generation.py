"""The Generate tab: streamed sampling with a real Stop, the token view and the next-token view."""

from __future__ import annotations

import json
import threading

import gradio as gr

from components import model_note
from components.common import COLUMN_MIN_WIDTH, WholeNumber, WholeSlider, context_html, explain, guard, stale_js
from components.plots import next_token_figure
from components.tokens import TIP_INSIDE_JS, GrowingStrip, visible
from models.core import registry, zerogpu
from models.engines import engine
from models.generation import generator, serving

EXAMPLES = [
    ["Once upon a time, in a small village by the sea,", 0.8, 0.95, 50, 7],
    ["The three most important ideas in physics are", 0.7, 0.9, 40, 1],
    ["Photosynthesis is the process by which", 0.0, 1.0, 0, 0],
    ["def fibonacci(n):", 0.2, 0.95, 50, 3],
]
# The page opens with the first example's prompt and settings (its seed too): pressing Generate as the page
# loads writes the same text as picking that example and pressing Generate.
FIRST_EXAMPLE = dict(zip(("prompt", "temperature", "top_p", "top_k", "seed"), EXAMPLES[0], strict=True))

EXPLANATION = """
A language model reads the text so far and outputs a **probability for every token** in its vocabulary
(SmolLM2 has 49,152). Generation repeats one step: pick a token from that distribution, append it, run again.

- **Temperature** divides the model's scores before the softmax: below 1 sharpens the distribution (safer, more
  repetitive), above 1 flattens it (more surprising). **0 = greedy**: always the single most likely token.
- **Top-k** keeps only the k most likely tokens; **top-p** (nucleus) keeps the smallest set whose probabilities
  add up to p. The rest are cut and the survivors renormalised. The next-token chart shows all three stages.
- **Seed**: sampling draws random numbers; the same seed and settings give the same text.
- **Surprisal**: a token with probability p costs −log₂ p bits. The sum over the text is exactly the size an
  arithmetic coder driven by this model would compress it to — see the Compress tab.
"""

# Stop sets the event of the session's running generation; the model checks it every step.
_running: dict[str, threading.Event] = {}
_running_lock = threading.Lock()


def model_choices() -> list[tuple[str, str]]:
    return serving.choices()  # a model server's model (--engine-url) first, then the models that run here


def _settings(temperature, top_p, top_k, max_new_tokens, repetition_penalty, seed, chat) -> generator.SamplingSettings:
    return generator.SamplingSettings(
        temperature=temperature, top_p=top_p, top_k=top_k, max_new_tokens=max_new_tokens,
        repetition_penalty=repetition_penalty, seed=seed, chat_template=bool(chat),
    ).validate()


def _status(ev: generator.StreamEvent, running: bool) -> str:
    n = len(ev.tokens)
    if running and not n and ev.queue_position:
        return (f"**Waiting for a place in the batch** · position {ev.queue_position} in the queue · the model is "
                f"busy with other users' requests; yours starts as soon as one finishes")
    decoding = max(0.0, ev.seconds - (ev.first_token_seconds or 0.0))
    rate = (n - 1) / decoding if n > 1 and decoding > 0 else 0.0
    reason = {"eos": "the model ended the text", "length": "reached max new tokens", "stopped": "stopped by you",
              "context": "reached the model's context length",
              "dropped": "the model server closed the stream"}.get(ev.finish_reason, "")
    head = "**Generating…**" if running else f"**Done** — {reason}"
    bits = ev.total_bits
    bpt = bits / n if n else 0.0
    others = max(ev.sharing - 1, 0)  # 0 before the request has shared any step
    sharing = f" · sharing the model with {others} other {'request' if others == 1 else 'requests'}" if others else ""
    sharing += f" · {ev.engine}" if ev.engine else ""
    # A rate needs at least two tokens after the first one's wait; a count of one is "1 token".
    speed = f" · {rate:.1f} tokens per second for you" if n > 2 and rate > 0 else ""
    shown = f"{bits:.0f}"
    msg = (f"{head} · {n} {'token' if n == 1 else 'tokens'}{speed}{sharing} · "
           f"**{shown} {'bit' if shown == '1' else 'bits'}** in total "
           f"({bpt:.2f} bits per token, what the model would compress this output to)")
    if not running and n and not ev.text.strip():  # say why, from the real finish reason
        msg += (" · the model chose to end the text at once; try another seed or a higher temperature"
                if ev.finish_reason == "eos" and n == 1 else " · the text is only blanks (spaces or line breaks)")
    if ev.notice:
        msg = f"**Note:** {ev.notice}\n\n{msg}"
    return msg


@guard
def generate(prompt, model_key, temperature, top_p, top_k, max_new_tokens, repetition_penalty, seed, chat,
             request: gr.Request):
    """Stream the continuation of `prompt`: (text so far, token view HTML, status)."""
    s = _settings(temperature, top_p, top_k, max_new_tokens, repetition_penalty, seed, chat)
    cancel = threading.Event()
    session = getattr(request, "session_hash", None) or str(id(cancel))
    with _running_lock:
        previous = _running.get(session)
        if previous:
            previous.set()
        _running[session] = cancel
    try:
        strip = GrowingStrip()
        compressed = None
        # At once, before the model (loaded on its first use: a minute for a larger one) answers: the old text
        # stood unchanged for 70 s after Generate, and a teacher pressed again.
        yield "", "", STARTING
        try:
            for ev in serving.stream(model_key, prompt, s, cancel):
                if compressed is None:  # once the model has loaded
                    compressed = registry.compressed_note(model_key, registry.CAUSAL_LM, loaded=True)
                status = _status(ev, not ev.done)
                status = f"{status} · model {compressed}" if compressed else status
                yield ev.text, strip(ev.tokens), f"{status}\n\n**Note:** {ev.model_note}" if ev.model_note else status
        except Exception:  # the message itself comes as the notice; the status must not go on saying "reading"
            yield gr.skip(), gr.skip(), NOT_GENERATED
            raise
    finally:
        # Reached on normal end, on Stop, and when Gradio closes the generator (tab closed).
        cancel.set()
        with _running_lock:
            if _running.get(session) is cancel:
                del _running[session]


NOT_GENERATED = "Not generated: the notice says why."
STARTING = "⏳ Reading the prompt… (the first use of a model loads it first: up to a minute)"


def stop(request: gr.Request) -> None:
    session = getattr(request, "session_hash", None)
    with _running_lock:
        event = _running.get(session)
    if event:
        event.set()


PROMPT_CHANGED = ("The prompt changed, so the text generated for the old one is gone: press **Generate** to write "
                  "this prompt's continuation.")
PROMPT_CHANGED_JS = f"(output) => output ? ['', '', {json.dumps(PROMPT_CHANGED)}] : []"

CANDIDATE_COLUMNS = ("#", "token", "p (model)", "p (after penalty and temperature)", "top-k / top-p", "p (sampled)")
READ_CHOICES = [("prompt + generated text", "both"), ("the prompt only", "prompt")]



@guard
def next_token(prompt, output, model_key, temperature, top_p, top_k, repetition_penalty=1.0, read="both"):
    """The distribution of the next token after prompt + output (or the prompt only, read="prompt"), before and
    after the sliders: (figure, table rows, context HTML)."""
    text = (prompt or "") + ("" if read == "prompt" else (output or ""))
    cands, notice = serving.next_token(model_key, text, temperature, top_p, int(top_k),
                                       repetition_penalty=float(repetition_penalty))
    kept = "greedy choice" if temperature == 0 else "kept"

    def shown(p: float):  # a model server sends the model's probabilities only: the other columns are "—"
        return "—" if p != p else round(p, 4)

    rows = [[i + 1, visible(c.token), shown(c.prob), shown(c.prob_tempered),
             (kept if c.kept else "cut") if c.prob_final == c.prob_final else "—", shown(c.prob_final)]
            for i, c in enumerate(cands)]
    return (next_token_figure(cands, temperature, top_p, int(top_k), float(repetition_penalty), notice), rows,
            context_html(text, "The next token after", model_key))


def build() -> dict:
    """Lay out and wire the tab; returns the widgets other views of the prefix read (prompt, output, model) and
    the "compress this text" button."""
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=COLUMN_MIN_WIDTH):
            prompt = gr.Textbox(label="Prompt", lines=4, placeholder="Type the start of a text…",
                                value=FIRST_EXAMPLE["prompt"], elem_id="gen-prompt")
            with gr.Row():
                choices = model_choices()
                # Models appear while the app runs (a compressed checkpoint used as a model, a finished run):
                # the list refreshes when opened, and a key the list has not shown yet is checked by the registry.
                model = gr.Dropdown(choices=choices, value=choices[0][1], label="Model", scale=4, elem_id="gen-model", min_width=300,
                                    info=registry.more_models_note(), allow_custom_value=True)
                refresh = gr.Button("Refresh the list", scale=1, size="sm")
            with gr.Row():
                go = gr.Button("Generate", variant="primary", elem_id="gen-go")
                stop_btn = gr.Button("Stop", variant="stop", elem_id="gen-stop")
                # The lesson's bridge (components/lesson.py wires it): this text, compressed by every coder.
                carry = gr.Button("Compress this text →", elem_id="gen-compress")
            output = gr.Textbox(label="Generated text", lines=6, interactive=False, elem_id="gen-output")
            status = gr.Markdown("Press **Generate**.", elem_classes=["lmlab-status"], elem_id="gen-status")
            tokens = gr.HTML(label="Token view", elem_id="gen-tokens", js_on_load=TIP_INSIDE_JS)
        with gr.Column(scale=2, min_width=COLUMN_MIN_WIDTH):
            defaults = generator.SamplingSettings()
            meta = generator.SamplingSettings.__dataclass_fields__
            temperature = gr.Slider(0, 2, value=FIRST_EXAMPLE["temperature"], step=0.05, label="Temperature", elem_id="gen-temperature", info=meta["temperature"].metadata["help"])
            top_p = gr.Slider(0.05, 1, value=FIRST_EXAMPLE["top_p"], step=0.01, label="Top-p", elem_id="gen-top-p", info=meta["top_p"].metadata["help"])
            top_k = WholeSlider(0, 200, value=FIRST_EXAMPLE["top_k"], label="Top-k", elem_id="gen-top-k", info=meta["top_k"].metadata["help"])
            max_new = WholeSlider(1, 512, value=defaults.max_new_tokens, label="Max new tokens", elem_id="gen-max-new", info=meta["max_new_tokens"].metadata["help"])
            rep = gr.Slider(1.0, 2.0, value=defaults.repetition_penalty, step=0.05, label="Repetition penalty", info=meta["repetition_penalty"].metadata["help"])
            seed = WholeNumber(value=FIRST_EXAMPLE["seed"], minimum=0, label="Seed", elem_id="gen-seed", info=meta["seed"].metadata["help"])
            chat = gr.Checkbox(value=defaults.chat_template, label="Use chat template", info=meta["chat_template"].metadata["help"])
    with gr.Accordion("Next-token view: what the sliders do to the distribution", open=True):
        with gr.Row(equal_height=True):
            read = gr.Radio(READ_CHOICES, value="both", label="Read", elem_id="gen-peek-read", scale=2)
            peek = gr.Button("Show the next-token distribution", elem_id="gen-peek", scale=1)
        context = gr.HTML(elem_id="gen-peek-context", padding=False)
        plot = gr.Plot(label="Next-token candidates", show_label=False, elem_id="gen-next-plot")
        table = gr.Dataframe(headers=list(CANDIDATE_COLUMNS),
                             label="Top candidates", interactive=False, wrap=True, elem_id="gen-candidates",
                             column_widths=["5%", "21%", "13%", "21%", "24%", "16%"])
    gr.Examples(EXAMPLES, inputs=[prompt, temperature, top_p, top_k, seed], label="Examples")
    explain("How does sampling work?", EXPLANATION)

    sampling = [temperature, top_p, top_k, max_new, rep, seed, chat]
    local = engine.local().capabilities
    if local.shares_steps:
        # The engine decides who shares a forward pass; Gradio's queue only bounds how many streams
        # are open at once (the rest wait in its queue).
        streams = dict(concurrency_id="generate", concurrency_limit=local.open_streams)
        views = dict(concurrency_id="next_token", concurrency_limit=local.open_streams)
    else:  # one request at a time, as without batching: the comparison and debugging path
        streams = dict(concurrency_id="model", concurrency_limit=2)
        views = dict(concurrency_id="model")
    # The status line says what is happening; Gradio's own timer would show the previous run's estimate.
    quiet = dict(show_progress="minimal", show_progress_on=[output])
    go.click(zerogpu.gpu(generate), [prompt, model, *sampling], [output, tokens, status], api_name="generate",
             **streams, **quiet)
    prompt.submit(zerogpu.gpu(generate), [prompt, model, *sampling], [output, tokens, status], api_visibility="private",
                  concurrency_id=streams["concurrency_id"], **quiet)
    # Stop sets the session's event; the model checks it every step, so generation ends within one
    # token and the stream closes with its final "stopped" status.
    stop_btn.click(stop, None, None, queue=False, api_name="stop")
    peek_inputs = [prompt, output, model, temperature, top_p, top_k, rep, read]
    peek.click(zerogpu.gpu(next_token), peek_inputs, [plot, table, context], api_name="next_token", **views,
               show_progress_on=[plot])
    # `input` fires for a drag and for a number typed in the slider's box (`release` only when the mouse lets
    # go or the box loses focus); always_last drops the intermediate positions of a drag.
    for slider in (temperature, top_p, top_k, rep):
        slider.input(zerogpu.gpu(next_token), peek_inputs, [plot, table, context], api_visibility="private",
                     concurrency_id=views["concurrency_id"], trigger_mode="always_last", show_progress_on=[plot])
    # A generated text continues the prompt it was written for. Edited (or an example picked), the prompt no
    # longer matches it, and the next steps read the prompt and the generated text together: a teacher's new
    # prompt "The capital of France is" was read, and compressed, with the old story after it. So the old text
    # goes (in the browser, no server call: this fires as you type); the same seed writes it again.
    prompt.change(None, [output], [output, tokens, status], js=PROMPT_CHANGED_JS, queue=False,
                  api_visibility="private")
    # the table too: it stayed under the "text changed" note with the old text's numbers
    stale = stale_js("Show the next-token distribution", plots=1, reads_prefix=True, tables=(CANDIDATE_COLUMNS,))
    for changed in (prompt.change, output.change, read.change, model.change):
        changed(None, [context, prompt, output, read, model], [context, plot, table], js=stale, api_visibility="private",
                queue=False)
    refresh.click(lambda: gr.Dropdown(choices=model_choices()), None, model, api_visibility="private")
    model.focus(lambda: gr.Dropdown(choices=model_choices()), None, model, api_visibility="private", queue=False,
                show_progress="hidden")
    model_note.attach(model, registry.CAUSAL_LM)  # the sizes when the model runs from a compressed checkpoint
    return {"prompt": prompt, "output": output, "model": model, "carry": carry}
