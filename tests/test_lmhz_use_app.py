"""Compress a checkpoint in the Compress tab, press "use as a model", and run it in Generate and NER, in another
session, without restarting the app: the whole path through the running app's API, no file placed by hand."""

from __future__ import annotations

import re

import pytest
import torch

from models.core import assets, registry

LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]


@pytest.fixture(scope="module")
def app_with_local_models(tmp_path_factory):
    from transformers import AutoTokenizer, BertConfig, BertForTokenClassification, GPT2Config, GPT2LMHeadModel

    from tests.app_process import running_app

    root = tmp_path_factory.mktemp("local-models")
    tok = registry.gpt2_tokenizer()
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=2, n_positions=128, vocab_size=len(tok))).save_pretrained(
        root / "tiny-gpt2")
    tok.save_pretrained(root / "tiny-gpt2")
    wordpiece = AutoTokenizer.from_pretrained(str(assets.path("all-minilm-l6-v2")))
    config = BertConfig(vocab_size=wordpiece.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, id2label=dict(enumerate(LABELS)),
                        label2id={label: i for i, label in enumerate(LABELS)})
    BertForTokenClassification(config).save_pretrained(root / "tiny-ner")
    wordpiece.save_pretrained(root / "tiny-ner")
    log = tmp_path_factory.mktemp("lmhz-app") / "app.log"
    with running_app("--offline", "--model-dir", str(root / "tiny-gpt2"), "--model-dir", str(root / "tiny-ner"),
                     log_path=log, timeout=180) as (url, _):
        yield url, root


def _compress_and_use(client, weights: str) -> str:
    from gradio_client import handle_file

    outputs = client.predict(weights, None, "as stored", api_name="/compress_checkpoint")
    download = outputs[-1]
    assert download.endswith(".lmhz")
    return client.predict(handle_file(download), api_name="/use_as_model")


def test_a_compressed_checkpoint_becomes_a_model_in_generate_and_ner_without_a_restart(app_with_local_models):
    from gradio_client import Client

    url, root = app_with_local_models
    teacher = Client(url, verbose=False)
    status = _compress_and_use(teacher, str(root / "tiny-gpt2" / "model.safetensors"))
    assert "Generate tab's model list" in status
    name = re.search(r"from (\S+\.lmhz)", status).group(1)

    student = Client(url, verbose=False)  # another session, same running app
    text, _, gen_status = student.predict("The capital of France is", f"lmhz:{name}", 0.0, 1.0, 0, 4, 1.0, 0, False,
                                          api_name="/generate")
    assert "Done" in gen_status and "decompressed in memory" in gen_status and name in gen_status

    status = _compress_and_use(teacher, str(root / "tiny-ner" / "model.safetensors"))
    assert "NER tab's model list" in status
    ner_name = re.search(r"from (\S+\.lmhz)", status).group(1)
    highlighted, table, pieces, ner_status = student.predict("Angela Merkel visited Paris.", f"lmhz:{ner_name}",
                                                             "first", 0.0, api_name="/ner")
    assert ner_name in ner_status


def test_a_file_that_is_no_model_here_is_refused_with_the_reason(app_with_local_models, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError
    from safetensors.torch import save

    from models.compression.checkpoint import codec as checkpoint

    url, _ = app_with_local_models
    client = Client(url, verbose=False)
    blob, _ = checkpoint.compress(save({"w": torch.ones(4, 4)}), "other.safetensors")
    other = tmp_path / "other.lmhz"
    other.write_bytes(blob)
    with pytest.raises(AppError, match="not the weights of any model here"):
        client.predict(handle_file(str(other)), api_name="/use_as_model")
    junk = tmp_path / "junk.lmhz"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(AppError, match="not a compressed checkpoint"):
        client.predict(handle_file(str(junk)), api_name="/use_as_model")
