"""The default text tokenizer reads UTF-8 bytes, so text in any script carries information; the
ASCII tokenizer of earlier mmae still rebuilds the models trained with it."""

import csv
import logging

import pytest
import torch

from mmae import MultimodalAutoencoder
from mmae.artifacts.export import build_model, describe
from mmae.cli.train import train
from mmae.core.fusion import MeanFusion
from mmae.modalities import TextModality, VectorModality
from mmae.modalities.text import ByteTokenizer, CharTokenizer

TEXT_CONFIG = {"model_type": "bert", "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
               "intermediate_size": 16}
SCRIPTS = {"greek": "Καλημέρα κόσμε", "arabic": "مرحبا بالعالم", "chinese": "你好，世界",
           "emoji": "🙂👍🏽 ok 🎉"}


def _text(**options) -> TextModality:
    return TextModality(model_config=TEXT_CONFIG, **options)


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_any_script_round_trips_when_it_fits(script):
    text = SCRIPTS[script]
    tokenizer = ByteTokenizer()
    ids = tokenizer.encode(text, max_length=64)
    assert len(ids) == 64 and ids[-1] == tokenizer.pad_token_id and max(ids) < tokenizer.vocab_size
    assert tokenizer.decode(ids) == text
    modality = _text(max_length=64)
    assert modality.vocab_size == 257 and modality.preview(modality.encode_text(text).unsqueeze(0)) == [text]


def test_truncation_keeps_whole_characters():
    tokenizer = ByteTokenizer()
    ids = tokenizer.encode("ab你", max_length=4)  # 你 is 3 bytes: 2 + 3 > 4, so it is left out whole
    assert ids == [ord("a") + 1, ord("b") + 1, 0, 0]
    assert tokenizer.decode(ids) == "ab"
    for length in range(1, 12):  # every cut of a mix of 1-, 2-, 3- and 4-byte characters
        decoded = tokenizer.decode(tokenizer.encode("aκ你🙂b", max_length=length))
        assert "\ufffd" not in decoded and "aκ你🙂b".startswith(decoded)
        assert len(decoded.encode()) <= length


def test_a_reconstruction_that_is_not_utf8_still_decodes():
    tokenizer = ByteTokenizer()
    assert tokenizer.decode([0xE4 + 1, ord("a") + 1, 0, 0]) == "\ufffda"  # a lead byte without its tail


def test_different_non_ascii_texts_get_different_ids():
    text = _text()
    ids = {script: tuple(text.encode_text(s).tolist()) for script, s in SCRIPTS.items()}
    assert len(set(ids.values())) == len(SCRIPTS)
    ascii_ids = {tuple(CharTokenizer().encode(s, 32)) for s in ("Καλημέρα", "مرحبابكم")}
    assert len(ascii_ids) == 1  # what the ASCII tokenizer did: all unknown, all alike


def test_old_descriptions_without_a_tokenizer_rebuild_the_ascii_vocabulary():
    old = {"model": None, "model_config": TEXT_CONFIG, "tokenizer": None, "max_length": 16,
           "decoder_width": 8, "column": None}
    text = TextModality.from_export(old, None)
    assert isinstance(text.tokenizer, CharTokenizer) and text.vocab_size == 97
    assert text.config()["tokenizer"] == "ascii"

    def model(**text_options):
        return MultimodalAutoencoder({"text": _text(max_length=16, **text_options),
                                      "vector": VectorModality(dim=3)}, MeanFusion, latent_dim=4, embed_dim=8)

    assert describe(model())["modalities"]["text"]["config"]["tokenizer"] == "bytes"
    old_model = model(tokenizer="ascii")
    description = describe(old_model)
    description["modalities"]["text"]["config"]["tokenizer"] = None  # as mmae wrote it before bytes
    rebuilt = build_model(description)
    assert rebuilt.modalities["text"].vocab_size == 97
    rebuilt.load_state_dict(old_model.state_dict())  # encoder and decoder sized to the old vocabulary


@pytest.mark.parametrize("tokenizer", [None, "bytes", "ascii"])
def test_the_config_names_its_tokenizer_and_rebuilds_it(tokenizer):
    text = _text(tokenizer=tokenizer, max_length=12)
    config = text.config()
    assert config["tokenizer"] == (tokenizer or "bytes")
    rebuilt = TextModality.from_export(config, None)
    assert type(rebuilt.tokenizer) is type(text.tokenizer) and rebuilt.vocab_size == text.vocab_size
    assert rebuilt.decoding_settings() == text.decoding_settings()


def test_a_pretrained_tokenizer_is_the_models_and_reports_its_unknowns(saved_bert, caplog):
    text = TextModality(model=str(saved_bert), model_config=None, max_length=8)
    assert text.config()["tokenizer"] == str(saved_bert)
    with caplog.at_level(logging.INFO, logger="mmae.modalities.text"):
        text.fit(["one left dim", "one καλή"])
    assert "20.0% of the tokens" in caplog.text  # 1 unknown word of 5 (this tokenizer adds no [CLS])
    assert "tokenizer=bytes" not in caplog.text  # a pretrained model needs its own tokenizer


def test_fit_reports_unknown_tokens_of_the_ascii_tokenizer(caplog):
    text = _text(tokenizer="ascii", max_length=32)
    with caplog.at_level(logging.INFO, logger="mmae.modalities.text"):
        text.fit(["Καλημέρα", SCRIPTS["chinese"]])  # no ASCII character in either
    unknown = [r for r in caplog.records if "unknown" in r.getMessage()]
    assert len(unknown) == 1 and unknown[0].levelno == logging.WARNING
    assert "100.0% of the tokens" in unknown[0].getMessage() and "tokenizer=bytes" in unknown[0].getMessage()
    config = text.config()
    text.fit(["plain ascii"])  # fitting changes nothing that shards or exports rebuild from
    assert text.config() == config


def test_fit_reports_truncation_of_the_byte_tokenizer(caplog):
    text = _text(max_length=8)
    with caplog.at_level(logging.INFO, logger="mmae.modalities.text"):
        text.fit(["short", "Καλημέρα κόσμε", "abc", "你好"])  # 27 bytes: cut; 你好: 6 bytes
    messages = [r for r in caplog.records if r.name == "mmae.modalities.text"]
    assert len(messages) == 1 and "unknown" not in messages[0].getMessage()  # bytes have no unknowns
    assert messages[0].levelno == logging.WARNING
    assert "25.0% of 4 training texts" in messages[0].getMessage()
    assert "modality.text.max_length" in messages[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mmae.modalities.text"):
        _text(max_length=64).fit(list(SCRIPTS.values()))
    assert [r.levelno for r in caplog.records if r.name == "mmae.modalities.text"] == [logging.INFO]


@pytest.mark.slow
def test_a_manifest_of_non_ascii_text_trains_and_decodes_to_its_scripts(tmp_path, compose_cfg):
    path = tmp_path / "manifest.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "script", "row"])  # (rows are distinct: repeats would be warned about)
        for i in range(240):
            script = sorted(SCRIPTS)[i % len(SCRIPTS)]
            writer.writerow([SCRIPTS[script], script, i])
    _, objects = train(compose_cfg(
        "logger=none", "progress_bar=none", "data=manifest", f"data.path={path}",
        "model.latent_dim=8", "model.embed_dim=32", "model.decoder_hidden=64",
        "data.num_workers=0", "modality=[text,tabular]", "modality.tabular.categorical=[script]",
        "modality.text.max_length=40", *(f"modality.text.model_config.{k}={v}" for k, v in TEXT_CONFIG.items()
                                          if k != "model_type"), "trainer.max_epochs=6"))
    text = objects["module"].model.modalities["text"]
    batch = next(iter(objects["datamodule"].val_dataloader()))
    assert set(text.decode(batch.inputs["text"])) <= set(SCRIPTS.values())  # the dataset's ids are the texts
    model = objects["module"].model.eval()
    with torch.no_grad():
        logits = model({"tabular": batch.inputs["tabular"]}).reconstructions["text"]
    decoded = text.decode(logits)
    exact = sum(d == t for d, t in zip(decoded, text.decode(batch.inputs["text"]), strict=True))
    assert exact >= len(decoded) // 2, decoded  # reconstructed from the script column alone
    assert all(any(ord(c) > 127 for c in d) for d in decoded)  # not all unknown, not all ASCII
