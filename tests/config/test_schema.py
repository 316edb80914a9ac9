"""Config validation at composition time (mmae.config.schema): unknown keys, wrong types and
impossible combinations fail with the dotted key and the valid choices, before anything is
built. Compose only: nothing here trains."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from omegaconf import open_dict

from mmae.cli.evaluate import main as eval_main
from mmae.cli.features import main as features_main
from mmae.cli.train import train
from mmae.config import check_group_overrides, compose_config, group_options
from mmae.config.schema import validate_config
from mmae.config.variants import VARIANTS
from mmae.core.errors import ConfigError

MODEL_KEYS = "latent_dim, embed_dim, decoder_hidden, variational, latent_activation"


def _rejects(cfg, message: str, name: str = "train") -> None:
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg, name)


# --- unknown keys ---------------------------------------------------------------------------

def test_unknown_nested_key_added_with_plus_lists_the_valid_keys(compose_cfg):
    _rejects(compose_cfg("+model.latnt_dim=3"),
             re.escape("unknown key 'model.latnt_dim' (did you mean 'latent_dim'?); the valid keys "
                       f"of mmae.core.model.MultimodalAutoencoder: {MODEL_KEYS}"))


def test_override_of_a_key_that_does_not_exist_lists_the_valid_keys():
    # Without `+`, Hydra refuses it naming the key only; compose_config adds the valid ones.
    with pytest.raises(ConfigError, match=re.escape(f"MultimodalAutoencoder: {MODEL_KEYS}")):
        compose_config("train", ["model.latnt_dim=3"])


def test_top_level_typo_lists_the_top_level_keys(compose_cfg):
    with pytest.raises(ConfigError, match=r"unknown key 'sed' \(did you mean 'seed'\?\); the valid "
                                          r"keys of the top level of train\.yaml: seed, ckpt_path, compile,"):
        compose_config("train", ["sed=1"])
    _rejects(compose_cfg("+trainr.max_epochs=1"), r"unknown key 'trainr' \(did you mean 'trainer'\?\)")


@pytest.mark.parametrize("override, message", [
    ("+compile_options.mod=max-autotune", r"unknown key 'compile_options\.mod' \(did you mean 'mode'\?\); "
                                          r"the valid keys of compile_options: backend, mode, dynamic"),
    ("+trainer.max_epoch=3", r"unknown key 'trainer\.max_epoch' \(did you mean 'max_epochs'\?\); the valid "
                             r"keys of pytorch_lightning\.Trainer: accelerator, strategy, .*profiler"),
    ("+corruption.noise.sigm=0.1",
     r"unknown key 'corruption\.noise\.sigm'.* of mmae\.core\.corruption\.GaussianNoise"),
    ("+callbacks.model_checkpoint.monitr=val/loss", r"did you mean 'monitor'"),
    ("+objective.terms.reconstruction.weight={image: 2}", r"did you mean 'weights'"),
])
def test_unknown_keys_in_sections_and_nested_targets(compose_cfg, override, message):
    extra = ["corruption=gaussian"] if "noise" in override else []
    _rejects(compose_cfg(*extra, override), message)


def test_keys_mmae_passes_when_it_builds_cannot_be_set(compose_cfg):
    _rejects(compose_cfg("+model.modalities=[image]"),
             r"model\.modalities cannot be set in the config: mmae passes it when it builds model")
    # and they are not offered as valid keys
    with pytest.raises(ConfigError) as error:
        validate_config(compose_cfg("+fusion.hidden=3"))
    assert "latent_dim" not in str(error.value).partition("valid keys")[2]


def test_a_bad_key_in_a_user_experiment_is_named(tmp_path):
    """An experiment of your own, in a directory added with hydra.searchpath: Hydra merges it
    without struct checks, so the schema is what finds the typo."""
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text(
        "# @package _global_\nmodel:\n  latnt_dim: 3\ntrainer:\n  max_epochs: 2\n")
    search = f"hydra.searchpath=[file://{tmp_path}]"
    with pytest.raises(ConfigError, match=re.escape("unknown key 'model.latnt_dim' (did you mean "
                                                    "'latent_dim'?); the valid keys of mmae.core.model.")):
        compose_config("train", [search, "experiment=mine", f"paths.output_dir={tmp_path}"])
    # the experiment's name itself is found in the added directory (and offered when misspelt)
    check_group_overrides([search, "experiment=mine"])
    with pytest.raises(ConfigError, match=r"unknown experiment 'mien'.*available: mine, overcomplete"):
        check_group_overrides([search, "experiment=mien"])


def test_an_experiment_for_another_data_config_is_caught(compose_cfg):
    # experiment=tiny sets data.dataset.num_samples, which the manifest datamodule does not take
    _rejects(compose_cfg("data=manifest", "data.path=x.csv", "experiment=tiny"),
             r"unknown key 'data\.dataset'; the valid keys of "
             r"mmae\.training\.datamodule\.ManifestDataModule: path,")


def test_a_bad_key_set_after_composition(compose_cfg):
    cfg = compose_cfg()
    with open_dict(cfg):
        cfg.callbacks.media.every_n_epoch = 2
    _rejects(cfg, r"unknown key 'callbacks\.media\.every_n_epoch' \(did you mean 'every_n_epochs'\?\)")


def test_a_target_that_does_not_import_or_misses_an_argument(compose_cfg):
    _rejects(compose_cfg("model._target_=mmae.core.model.MultimodalAutoencodr"),
             r"model\._target_: cannot import 'mmae\.core\.model\.MultimodalAutoencodr'")
    _rejects(compose_cfg("+callbacks.stop._target_=pytorch_lightning.callbacks.EarlyStopping"),
             r"callbacks\.stop: pytorch_lightning\.callbacks\.EarlyStopping needs monitor; "
             r"set callbacks\.stop\.monitor=\.\.\.")
    _rejects(compose_cfg("data=manifest"), r"data\.path is required \(it is \?\?\?\)")


# --- types and choices ------------------------------------------------------------------------

@pytest.mark.parametrize("override, message", [
    ("model.latent_dim=abc", r"model\.latent_dim must be an int; got 'abc' \(str\)"),
    ("trainer.max_epochs=1.5", r"trainer\.max_epochs must be an int or null; got 1\.5 \(float\)"),
    ("optimizer.lr=fast", r"optimizer\.lr must be a number; got 'fast'"),
    ("modality.image.hidden_channels=[32,wide]", r"modality\.image\.hidden_channels\[1\] must be an int"),
    ("compile=maybe", r"compile must be true or false; got 'maybe'"),
    ("seed=[1]", r"seed must be an int or null; got \[1\]"),
    ("corruption.p=high", r"corruption\.p must be a number; got 'high'"),
])
def test_wrong_types_name_the_key_and_the_expected_type(compose_cfg, override, message):
    _rejects(compose_cfg(override), message)


def test_paths_is_open_to_directories_of_your_own(compose_cfg):
    """`paths` holds directories for interpolation (`data.path=${paths.data_dir}/m.csv`)."""
    cfg = compose_cfg("+paths.data_dir=/data", "data=manifest", "data.path=${paths.data_dir}/m.csv")
    validate_config(cfg)
    assert cfg.data.path == "/data/m.csv"
    _rejects(compose_cfg("+paths.data_dir=[1,2]"), r"paths\.data_dir must be a string; got \[1, 2\]")


@pytest.mark.parametrize("override, message", [
    ("trainer.precision=17", r"trainer\.precision must be one of 64, 32, 16, transformer-engine, .*16-mixed, "
                             r"bf16-true, bf16-mixed, 32-true, 64-true, bf16, null; got 17 \(int\)"),
    ("training.on_nonfinite=ignore", r"training\.on_nonfinite must be one of raise, skip; got 'ignore'"),
    ("model.latent_activation=softmax",
     r"model\.latent_activation must be one of sigmoid, tanh, relu, binary, null"),
    ("trainer.deterministic=yes", r"trainer\.deterministic must be one of warn, null \(or true or false\)"),
])
def test_choices_are_listed(compose_cfg, override, message):
    _rejects(compose_cfg(override), message)


def test_choices_of_mmae_s_own_classes_are_listed(compose_cfg):
    _rejects(compose_cfg("objective=contractive", "objective.terms.contractive.method=hutch"),
             r"objective\.terms\.contractive\.method must be one of auto, exact, projection; got 'hutch'")
    _rejects(compose_cfg("data=manifest", "data.path=x.csv", "data.on_error=ignore"),
             r"data\.on_error must be one of raise, skip")
    _rejects(compose_cfg("modality=[text]", "modality.text.pooling=max"),
             r"modality\.text\.pooling must be one of mean, cls")
    _rejects(compose_cfg("compile_options.mode=fastest"),
             r"compile_options\.mode must be one of default, reduce-overhead, max-autotune, "
             r"max-autotune-no-cudagraphs, null")


def test_entry_configs_of_eval_and_features_are_checked():
    with pytest.raises(ConfigError, match=r"task must be one of probe, anomaly, .*, all; got 'probes'"):
        compose_config("evaluate", ["task=probes"])
    with pytest.raises(ConfigError, match=r"unknown key 'modality' \(did you mean 'modalities'\?\)"):
        compose_config("features", ["+modality=[image]"])
    with pytest.raises(SystemExit, match=r"^mmae-features: split must be one of train, val, test"):
        features_main(["encoder=e", "output=f.npz", "split=dev"])
    with pytest.raises(SystemExit, match=r"^mmae-eval: projection must be one of pca, tsne, umap"):
        eval_main(["run=r", "projection=isomap"])


def test_interpolations_are_checked_resolved_or_skipped(compose_cfg):
    cfg = compose_cfg()
    with open_dict(cfg):
        cfg.trainer.default_root_dir = "${hydra:runtime.output_dir}"  # no Hydra app here: skipped
    validate_config(cfg)
    with open_dict(cfg):
        cfg.model.latent_dim = "${paths.output_dir}"  # resolves to a string
    _rejects(cfg, r"model\.latent_dim must be an int; got '/")


# --- impossible combinations ------------------------------------------------------------------

@pytest.mark.parametrize("precision", ["16-mixed", "16"])
def test_float16_mixed_precision_needs_a_gpu(compose_cfg, precision):
    _rejects(compose_cfg(f"trainer.precision={precision}"),
             rf"trainer\.precision={precision} \(float16 mixed precision\) needs a GPU, but "
             r"trainer\.accelerator=cpu .*choose trainer\.precision=bf16-mixed or 32-true on the CPU, "
             r"or trainer=gpu")
    validate_config(compose_cfg("trainer=gpu", f"trainer.precision={precision}"))
    validate_config(compose_cfg("trainer.precision=bf16-mixed"))
    validate_config(compose_cfg("trainer=ddp_cpu"))  # DDP on CPU processes is a valid setup


def test_compile_mode_and_options_are_exclusive(compose_cfg):
    both = ["compile_options.mode=max-autotune", "+compile_options.options={max_autotune: true}"]
    _rejects(compose_cfg("compile=true", *both),
             r"compile_options\.mode=max-autotune and compile_options\.options cannot both be set "
             r"\(torch\.compile takes one or the other\): set compile_options\.options=null")
    validate_config(compose_cfg(*both))  # not compiled: the options are not used
    validate_config(compose_cfg("compile=true", "compile_options.mode=max-autotune"))


@pytest.mark.parametrize("overrides, message", [
    (["fusion=poe"], r"fusion PoEFusion is variational: it needs model=vae; a deterministic model "
                     r"\(model=ae\) takes fusion=mean, concat or attention"),
    (["fusion=mopoe", "model.variational=false"], r"fusion MoPoEFusion is variational"),
    (["model=vae", "objective=sparse_kl"],
     r"model=vae has a Gaussian code: set model\.latent_activation=null"),
])
def test_model_and_fusion_that_cannot_work_together(compose_cfg, overrides, message):
    _rejects(compose_cfg(*overrides), message)


def test_resuming_needs_an_existing_checkpoint(compose_cfg, tmp_path):
    _rejects(compose_cfg(f"ckpt_path={tmp_path / 'nowhere.ckpt'}"),
             r"ckpt_path: no checkpoint at .*nowhere\.ckpt")
    _rejects(compose_cfg("ckpt_path=last"), r"no checkpoint at .*last\.ckpt.*pass the run's directory")
    validate_config(compose_cfg("ckpt_path=auto"))  # nothing to resume yet: a fresh start
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    validate_config(compose_cfg("ckpt_path=last"))


def test_a_null_modality_is_refused(compose_cfg):
    _rejects(compose_cfg("modality.vector=null"), r"modality\.vector is null: leave it out of modality")


# --- everything shipped is valid --------------------------------------------------------------

def _shipped() -> list[list[str]]:
    needs = {"data=manifest": ["data.path=x.csv"], "data=stream": ["data.path=shards"],
             "fusion=poe": ["model=vae"], "fusion=moe": ["model=vae"],
             "fusion=mopoe": ["model=vae"], "modality=[tabular]": ["modality.tabular.numeric=[a]"]}
    choices = [f"{group}={name}" for group in ("data", "model", "fusion", "objective", "corruption",
                                                "trainer", "logger", "callbacks", "progress_bar",
                                                "experiment", "paths")
               for name in group_options(group)]
    choices += [f"modality=[{name}]" for name in group_options("modality")]
    return [[choice, *needs.get(choice, [])] for choice in choices]


@pytest.mark.parametrize("overrides", _shipped(), ids=" ".join)
def test_every_shipped_config_is_valid(compose_cfg, overrides):
    validate_config(compose_cfg(*overrides))


@pytest.mark.parametrize("overrides", list(VARIANTS.values()), ids=list(VARIANTS))
def test_every_variant_is_valid(compose_cfg, overrides):
    """As the variant tests compose them, with the W&B logger's interpolations resolved too."""
    validate_config(compose_cfg(*overrides, "experiment=small", "logger=wandb", "progress_bar=none",
                                "trainer.enable_model_summary=false"))


@pytest.mark.parametrize("name", ["train", "evaluate", "features"])
def test_entry_configs_compose_as_shipped(name):
    compose_config(name, [])


# --- where it runs ----------------------------------------------------------------------------

def test_train_validates_before_anything_is_built(compose_cfg, tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'model\.latnt_dim'"):
        train(compose_cfg("+model.latnt_dim=3"))
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_cli_exits_with_the_message_and_no_traceback(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "mmae.train", "+model.latnt_dim=3",
                             f"paths.output_dir={out}"], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert ("mmae-train: unknown key 'model.latnt_dim' (did you mean 'latent_dim'?); the valid keys of "
            f"mmae.core.model.MultimodalAutoencoder: {MODEL_KEYS}") in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()  # refused before Hydra made the run directory


@pytest.mark.slow
def test_a_bad_key_with_a_config_dir_of_your_own_is_refused_before_the_run_directory(tmp_path):
    """`hydra.searchpath` (your own modality or experiment configs) does not skip the check
    made before Hydra creates the run directory."""
    (tmp_path / "conf").mkdir()
    out = tmp_path / "run"
    search = f"hydra.searchpath=[file://{tmp_path / 'conf'}]"
    result = subprocess.run([sys.executable, "-m", "mmae.train", search, "+model.latnt_dim=3",
                             f"paths.output_dir={out}"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "mmae-train: unknown key 'model.latnt_dim'" in result.stderr
    assert not out.exists()
