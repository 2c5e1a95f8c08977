"""The About section: the embedded models and data, with their packages and licences."""

from __future__ import annotations

import gradio as gr

from models.core import assets


def _state(asset: assets.Asset) -> str:
    if assets.is_ready(asset):
        return "yes"
    return f"downloaded ({asset.download_mb} MB) the first time it is picked" if asset.on_demand else "not yet"


def build() -> None:
    rows = assets.manifest_rows()
    lines = ["| asset | package | licence | ready |", "|---|---|---|---|"]
    for row, asset in zip(rows, assets.MANIFEST, strict=True):
        lines.append(f"| {row['asset']} | `{row['package']}` | {row['licence']} | {_state(asset)} |")
    with gr.Accordion("About LM Lab: embedded models and data", open=False):
        gr.Markdown(
            "These real models and texts are fetched once from pinned packages on the Python package index, "
            "checked against their sha256, and used offline. Hub models (GPT-2, DistilGPT-2, bert-base-NER) are "
            "used when the Hugging Face hub is reachable.\n\n" + "\n".join(lines)
        )
