"""LM Lab: a Gradio app for learning how language models generate text and compress it.

`build_demo()` composes the tabs (safe to import: it changes nothing outside the app); running this file
parses the flags, fetches any missing embedded asset (with progress in the log), installs the patches of
Gradio's internals (components/gradio_patches.py) and serves the app.
"""

from __future__ import annotations

import argparse
import logging
import os

import gradio as gr

from components import (
    about,
    beam_search,
    compress_text,
    compression,
    finetune,
    generation,
    glossary,
    gradio_patches,
    inside_step,
    lesson,
    ner,
    sampling_decode,
    theme,
)
from models.compression.checkpoint import as_model
from models.compression.text import baselines
from models.core import assets, device, handout, settings
from models.engines import engine
from models.training import runs

TITLE = "LM Lab"


def build_demo() -> gr.Blocks:
    runs.register()  # finished fine-tuning runs appear in every model picker
    # No usage analytics: the app must work offline and a classroom owes no one telemetry.
    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        gr.Markdown(
            f"# {TITLE}\nHow a language model writes text one token at a time — and why the same model is a "
            f"lossless compressor. Running on {device.pick().plain}"
            + (" · a public copy, so some limits are lower" if settings.public_mode() else "")
            + ("" if engine.local().capabilities.shares_steps else " · one request at a time"),
            elem_id="lmlab-title",
        )
        steps = lesson.strip()
        # The lesson's four steps first, in the story's order; then the practitioner's tools. Tab names that do
        # not fit the window wrap onto a second row: behind Gradio's "..." menu a class did not find them.
        with gr.Tabs(selected="generate", elem_id="lmlab-tabs", overflow_behavior="wrap") as tabs:
            with gr.Tab("Generate", id="generate"):
                widgets = generation.build()  # the prompt, generated text and model the next step reads
            with gr.Tab("Inside one step", id="inside"):
                with gr.Tabs(overflow_behavior="wrap"):
                    inside_step.build(widgets["prompt"], widgets["output"], widgets["model"])
                    beam_search.build(widgets["prompt"], widgets["output"], widgets["model"])
            with gr.Tab("Compress", id="compress"):
                compress = compress_text.build()
            with gr.Tab("Sampling is decompression", id="sampling"):
                sampling_decode.build()
            with gr.Tab("Fine-tune", id="finetune"):
                finetune.build()
            with gr.Tab("NER", id="ner"):
                ner.build()
            with gr.Tab("Checkpoints", id="checkpoints"):
                compression.build()
        glossary.build()  # the field's words, one shared place
        lesson.wire(tabs, steps)
        lesson.link(tabs, steps, widgets, compress)
        about.build()
    return demo


def launch_kwargs() -> dict:
    """What launch() needs besides host and port (theme and css moved there in Gradio 6)."""
    # allowed_paths: the tabs offer files they wrote for a visitor, each in its own unguessable folder under
    # the data folder's downloads/ (models/core/handout.py); gradio refuses to hand out files outside the
    # working directory, /tmp and these paths. Nothing else of the data folder (runs, assets) is served.
    # max_threads: every open generation stream holds a worker thread while it waits for its next token,
    # so a class of thirty (or a burst of a hundred) needs more than Gradio's default 40.
    return dict(theme=theme.theme(), css=theme.css(), max_file_size="200mb", show_error=True,
                allowed_paths=[str(handout.root())], max_threads=engine.MAX_OPEN_STREAMS + 64)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="LM Lab: generate, tag, fine-tune and compress with language models.")
    # A Space sets GRADIO_SERVER_NAME/PORT (and SPACE_ID); a laptop listens on loopback only.
    default_host = os.environ.get("HOST") or os.environ.get("GRADIO_SERVER_NAME") or (
        "0.0.0.0" if os.environ.get("SPACE_ID") else "127.0.0.1")
    default_port = int(os.environ.get("PORT") or os.environ.get("GRADIO_SERVER_PORT") or 7860)
    parser.add_argument("--host", default=default_host, help="address to listen on (env HOST; 0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=default_port, help="port (env PORT, default 7860)")
    parser.add_argument("--share", action="store_true", help="also open a temporary public gradio.live link")
    parser.add_argument("--device", default=None, help="auto (default), cuda, mps or cpu (env LMLAB_DEVICE)")
    parser.add_argument("--home", default=None, help="data folder for assets, runs and outputs (env LMLAB_HOME, default ~/.cache/lmlab)")
    parser.add_argument("--data-dir", default=None, help="local datasets folder with conll2003/ and wikitext-2/ (env LMLAB_DATA_DIR)")
    parser.add_argument("--model-dir", action="append", default=[], help="extra local model folder for the pickers (repeatable)")
    parser.add_argument("--offline", action="store_true", help="never try the Hugging Face hub")
    parser.add_argument("--public", action="store_true", help="public-hosting restrictions (on by default on a Space)")
    parser.add_argument("--no-batching", action="store_true",
                        help="run each model request alone, one after another (env LMLAB_BATCHING=0): for comparison and debugging")
    parser.add_argument("--engine-url", default=None,
                        help="an OpenAI-compatible model server (vLLM), e.g. http://gpu-box:8000/v1: its model joins "
                             "the Generate picker (env LMLAB_ENGINE_URL)")
    parser.add_argument("--engine-model", default=None,
                        help="the model's name on that server (env LMLAB_ENGINE_MODEL; default: the first it lists)")
    return parser.parse_args(argv)


def apply_args(args: argparse.Namespace) -> None:
    """Flags become environment variables, so training subprocesses inherit them."""
    if args.home:
        os.environ["LMLAB_HOME"] = os.path.abspath(os.path.expanduser(args.home))
    if args.data_dir:
        os.environ["LMLAB_DATA_DIR"] = os.path.abspath(os.path.expanduser(args.data_dir))
    if args.device:
        device.pick(args.device)  # fail early on an impossible choice
        os.environ["LMLAB_DEVICE"] = args.device
    if args.model_dir:
        os.environ["LMLAB_MODEL_DIRS"] = os.pathsep.join(os.path.abspath(p) for p in args.model_dir)
    if args.offline:
        os.environ["LMLAB_OFFLINE"] = "1"
        os.environ["HF_HUB_OFFLINE"] = "1"
    if args.public:
        os.environ["LMLAB_PUBLIC"] = "1"
    if args.no_batching:
        os.environ["LMLAB_BATCHING"] = "0"
    if args.engine_url:
        os.environ["LMLAB_ENGINE_URL"] = args.engine_url
    if args.engine_model:
        os.environ["LMLAB_ENGINE_MODEL"] = args.engine_model


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    apply_args(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    assets.fetch_all(log=logging.getLogger("lmlab.assets").info)
    as_model.install()  # the pickers offer .lmhz files made by the Compress tab ("use as a model")
    baselines.load_kernels()  # else the first Compress of a class times Huffman's kernels loading, not its coding
    demo = build_demo()
    demo.queue(default_concurrency_limit=1)
    gradio_patches.install(demo)  # here, not in build_demo(): importing or building the app changes no library
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, **launch_kwargs())


if __name__ == "__main__":
    main()
