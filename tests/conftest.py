"""Shared fixtures: the real Hydra config composed in-process, tiny modalities, and the
trained runs the evaluation tests share.

The suite runs on pytest-xdist workers (`-n auto` in pyproject.toml). Each worker takes its
share of the cores for torch's threads, and so do the processes it starts (through
OMP_NUM_THREADS): workers that each used every core would stall one another.
"""

from __future__ import annotations

import os

import pytest
import torch
from hydra import compose, initialize_config_dir
from tokenizers import Tokenizer, models, pre_tokenizers
from trained_runs import session_run
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

from mmae.config import CONFIG_DIR
from mmae.modalities import ImageModality, VectorModality
from mmae.modalities.text import CLASS_WORDS, FACTOR_WORDS, PRIVATE_WORDS


def _threads_per_worker() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))


if "PYTEST_XDIST_WORKER" in os.environ:
    THREADS = _threads_per_worker()
    os.environ["OMP_NUM_THREADS"] = str(THREADS)
    torch.set_num_threads(THREADS)


@pytest.fixture
def compose_cfg(tmp_path):
    """Compose `conf/train.yaml` as `mmae-train` would, writing under `tmp_path`."""

    def _compose(*overrides: str):
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            return compose("train", overrides=[f"paths.output_dir={tmp_path}", *overrides])

    return _compose


@pytest.fixture
def small_modalities():
    """Tiny image and vector modalities, fast enough for maths-level tests."""
    return {"image": ImageModality(channels=1, size=8, hidden_channels=[4]),
            "vector": VectorModality(dim=5, hidden=[8])}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def saved_bert(tmp_path_factory):
    """A tiny BERT and word-level tokenizer saved with save_pretrained: no download."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", *CLASS_WORDS, *PRIVATE_WORDS,
             *(w for group in FACTOR_WORDS for w in group)]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]",
                            cls_token="[CLS]", sep_token="[SEP]").save_pretrained(folder)
    config = BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=32)
    BertModel(config).save_pretrained(folder)
    return folder


#: The evaluation runs: three modalities (so coherence has subsets of 1 and 2 inputs).
EVAL_MODALITIES = ["modality=[image,vector,text]"]


@pytest.fixture(scope="session")
def eval_run(tmp_path_factory):
    """A trained deterministic run (image, vector, text) for the evaluation tasks' tests: its
    folder, with encoder/, checkpoints/best.ckpt and config.yaml. 2,000 samples and 8 epochs
    (two minutes on 2 cores), so that codes and imputations carry the class clearly above
    chance (probe 25%, coherence from 2 inputs 20%; chance 10%); the tiny run's do not."""
    return session_run(tmp_path_factory, "eval-ae", *EVAL_MODALITIES,
                       "data.dataset.num_samples=2000", "trainer.max_epochs=8")


@pytest.fixture(scope="session")
def eval_vae_run(tmp_path_factory):
    """A tiny multimodal VAE (mixture of products of experts) on the same modalities: for what
    only a VAE has (the prior's joint coherence), not for quality."""
    return session_run(tmp_path_factory, "eval-vae", *EVAL_MODALITIES, "trainer.max_epochs=4",
                       "model=vae", "fusion=mopoe")


#: Fixtures that train a run for the session: a test reading one is an end-to-end test.
SESSION_RUNS = ("eval_run", "eval_vae_run")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `slow` every test that needs a session run (directly or through another fixture),
    so that `-m "not slow"` trains none."""
    for item in items:
        if any(name in getattr(item, "fixturenames", ()) for name in SESSION_RUNS):
            item.add_marker(pytest.mark.slow)
