"""Settings that cannot apply, and a model whose output layer is wider than its tokenizer, through the app's API.

A tiny GPT-2 built from a config with 50,304 output ids (padded to a multiple of 64, as many checkpoints
are) and the real 50,257-token GPT-2 tokenizer, which has no chat template, is given to the app as a
local model folder (``--model-dir``), the way a user would.
"""

from __future__ import annotations

import pytest

from models.core import registry

PADDED_VOCAB = 50_304
PROMPT = "The capital of France is"


def save_padded_gpt2(folder, seed: int = 0, scale: float = 0.0):
    """A 2-layer GPT-2 whose output layer has 50,304 ids; ``scale`` > 0 pushes the 47 padding ids up
    (the ids the tokenizer does not have), so a sampler that does not mask them picks them often."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    tok = registry.gpt2_tokenizer()
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=2, n_positions=128, vocab_size=PADDED_VOCAB,
                                       tie_word_embeddings=False))
    if scale:
        with torch.no_grad():
            model.lm_head.weight[len(tok):] *= scale
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def padded_app(tmp_path_factory):
    from gradio_client import Client

    from tests.app_process import running_app

    folder = save_padded_gpt2(tmp_path_factory.mktemp("models") / "padded-gpt2", scale=40.0)
    log = tmp_path_factory.mktemp("padded-app") / "app.log"
    with running_app("--offline", "--model-dir", str(folder), log_path=log, timeout=180) as (url, _):
        yield Client(url, verbose=False), f"local:{folder}"


def test_chat_template_on_a_model_without_one_is_reported(padded_app):
    client, key = padded_app
    text, _, status = client.predict(PROMPT, key, 0.0, 1.0, 0, 4, 1.0, 0, True, api_name="/generate")
    assert "no chat template" in status and "plain text" in status
    _, _, plain = client.predict(PROMPT, key, 0.0, 1.0, 0, 4, 1.0, 0, False, api_name="/generate")
    assert "chat template" not in plain


# Every count the API takes: a fractional value is refused, never rounded (max_new_tokens=2.5 ran as 2).
INTEGER_PARAMETERS = {
    ("/generate", "top_k"), ("/generate", "max_new_tokens"), ("/generate", "seed"), ("/next_token", "top_k"),
    ("/logit_lens", "top_k"), ("/attention", "layer"), ("/attention", "head"), ("/attention", "window"),
    ("/beam_search", "num_beams"), ("/beam_search", "max_new_tokens"), ("/beam_search", "seed"),
    ("/ner_evaluate", "limit"), ("/arithmetic_steps", "n_steps"), ("/sampling_steps", "seed"),
    ("/sampling_steps", "n_steps"), ("/sample_from_bits", "seed"), ("/sample_from_bits", "n_tokens"),
}


def test_every_integer_parameter_of_every_endpoint_refuses_a_fraction(padded_app):
    from gradio_client.exceptions import AppError

    client, key = padded_app
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    integers = {(name, p["parameter_name"]) for name, ep in api.items() for p in ep["parameters"]
                if p["type"].get("type") == "integer"}
    assert integers == INTEGER_PARAMETERS  # a count shown as a float slider would be rounded silently
    for name, param in sorted(integers):
        args = []
        for p in api[name]["parameters"]:
            default = p.get("parameter_default") if p.get("parameter_has_default") else None
            if p["parameter_name"] == param:
                value = (default if isinstance(default, (int, float)) else 3) + 0.5
            elif p["parameter_name"] == "model_key":
                value = "smollm2-135m-instruct" if name not in ("/ner_evaluate",) else default
            elif p["type"].get("type") == "string":
                value = default if default is not None else PROMPT
            elif p["type"].get("type") in ("number", "integer") and default is None:
                value = 1
            else:
                value = default
            args.append(value)
        with pytest.raises(AppError, match="whole number"):
            client.predict(*args, api_name=name)


def test_train_start_refuses_a_fractional_count(padded_app):
    from gradio_client.exceptions import AppError

    client, _ = padded_app
    with pytest.raises(AppError, match="whole number"):
        client.predict({"task": "causal-lm", "max_steps": 2.5}, api_name="/train_start")
