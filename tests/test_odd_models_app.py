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


def save_padded_gpt2(folder):
    """A 2-layer GPT-2 whose output layer has 50,304 ids, with logits set by hand: the final layer norm
    outputs a constant, so every position predicts the same distribution, in which the 47 padding ids
    (no token spells them) score 50, "Paris" and " Paris" -200 (their float32 probability underflows to
    0.0) and every other token 0. A sampler that does not mask the padding picks it every time."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    tok = registry.gpt2_tokenizer()
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=2, n_positions=128, vocab_size=PADDED_VOCAB,
                                       tie_word_embeddings=False))
    with torch.no_grad():
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.zero_()
        model.transformer.ln_f.bias[0] = 1.0
        model.lm_head.weight.zero_()
        model.lm_head.weight[len(tok):, 0] = 50.0
        for word in ("Paris", " Paris"):
            model.lm_head.weight[tok.convert_tokens_to_ids(tok.tokenize(word))[0], 0] = -200.0
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def padded_app(tmp_path_factory):
    from gradio_client import Client

    from tests.app_process import running_app

    folder = save_padded_gpt2(tmp_path_factory.mktemp("models") / "padded-gpt2")
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
    ("/sampling_steps", "n_tokens"), ("/sample_from_bits", "seed"), ("/sample_from_bits", "n_tokens"),
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


# --- a vocabulary larger than the tokenizer: ids without text never come out, underflow never breaks a bit count


def test_generate_never_streams_an_id_the_tokenizer_cannot_spell(padded_app):
    import math
    import re

    client, key = padded_app
    text, html, status = client.predict(PROMPT, key, 1.0, 1.0, 0, 8, 1.0, 0, False, api_name="/generate")
    assert "reached max new tokens" in status and "end the text" not in status
    bits = float(re.search(r"\*\*([\d,.]+) bits\*\*", status).group(1).replace(",", ""))
    assert bits == pytest.approx(8 * math.log2(50_257 - 2), abs=8)  # uniform over the real tokens but "Paris"
    assert text.strip() and "50,304" in status and "47 ids" in status


def test_sample_from_bits_and_sampling_steps_on_a_padded_vocabulary(padded_app):
    client, key = padded_app
    text, heat, note = client.predict(key, 3, 12, "", api_name="/sample_from_bits")
    assert text.strip() and "47 ids" in note
    plot, table, note = client.predict(key, 3, 10, api_name="/sampling_steps")
    assert table.count("<tr><td>") == 10 and "47 ids" in note


def test_arithmetic_steps_floor_an_underflowed_probability(padded_app):
    import re

    client, key = padded_app
    plot, table, note = client.predict("Paris is in France", None, key, 5, api_name="/arithmetic_steps")
    rows = re.findall(r"<tr><td>\d+</td><td><b>(.*?)</b></td><td>(.*?)</td><td>\[.*?\)</td><td>([\d.]+)</td>", table)
    assert len(rows) == 4 and "Paris" in rows[0][0]  # Paris, is, in, France
    # "Paris": float32 p = 0.0; the coder's grid gives it one unit of 2^24, so about 24 bits, not an error
    assert 23.5 < float(rows[0][2]) < 25 and all(14 < float(r[2]) < 17 for r in rows[1:])
