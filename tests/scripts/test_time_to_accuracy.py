"""The benchmarks' time-to-accuracy measure and their speed yardstick, the peer MLP
autoencoder (scripts/time_to_accuracy.py, scripts/peer_mlp.py)."""


import pytest
import torch
from peer_mlp import PeerSettings, train_peer
from time_to_accuracy import time_to_fraction, training_history


def test_time_to_fraction_is_where_the_loss_made_that_part_of_its_drop():
    history = [(1.0, 10.0), (2.0, 4.0), (3.0, 1.5), (4.0, 1.0), (5.0, 1.2)]
    # Drop 10 -> 1 (the best, not the last); 95% of it is reached at 1.45: the epoch at 4 s.
    assert time_to_fraction(history, 0.95) == 4.0
    assert time_to_fraction(history, 0.5) == 2.0  # 5.5 reached at 4.0
    assert time_to_fraction([(3.0, 2.0), (6.0, 2.5)]) == 3.0  # never dropped: the first epoch
    assert time_to_fraction([(1.0, 5.0), (2.0, float("nan")), (3.0, 1.0)]) == 3.0
    assert time_to_fraction([]) is None and time_to_fraction([(1.0, float("inf"))]) is None


def test_training_history_reads_the_csv_log(tmp_path):
    log = tmp_path / "csv" / "metrics.csv"
    log.parent.mkdir()
    log.write_text("epoch,step,time/train_s,train/loss,val/loss\n"
                   "0,9,,0.9,\n0,9,1.5,,0.8\n1,19,,0.7,\n1,19,3.0,,0.6\n")
    resumed = tmp_path / "csv" / "resumed-1" / "metrics.csv"
    resumed.parent.mkdir()
    resumed.write_text("epoch,step,time/train_s,val/loss\n2,29,4.5,0.5\n")
    assert training_history(tmp_path) == [(1.5, 0.8), (3.0, 0.6), (4.5, 0.5)]
    assert training_history(tmp_path / "elsewhere") == []


@pytest.mark.slow
def test_the_peer_learns_a_shared_code_that_imputes_one_modality_from_the_other():
    generator = torch.Generator().manual_seed(0)
    factor = torch.randn(400, 2, generator=generator)
    raw = {"image": (factor @ torch.randn(2, 64, generator=generator)).view(400, 1, 8, 8),
           "audio": torch.sin(torch.linspace(0, 80, 16000) * (1.5 + factor[:, :1]))}
    settings = PeerSettings(epochs=30, latent_dim=4)
    run = train_peer(lambda: raw, seed=0, settings=settings)
    assert len(run.history) == 30 and run.seconds >= run.history[-1][0] > 0
    assert run.history[-1][1] < 0.5 * run.history[0][1]
    assert run.encode(raw).shape == (400, 4)
    imputed = run.impute("image", {"audio": raw["audio"]})
    real = run.features({"image": raw["image"]})["image"]
    assert imputed.shape == real.shape == (400, 64)
    # Imputed from the audio alone, the image is much closer than its mean (0 once standardised).
    assert ((imputed - real) ** 2).mean() < 0.5 * (real ** 2).mean()


@pytest.mark.parametrize("p", [0.3, 0.9])
def test_peer_dropout_never_hides_every_modality(p):
    from peer_mlp import _dropout

    present = _dropout(1000, ["image", "audio"], p, torch.Generator().manual_seed(0))
    assert bool((present["image"] | present["audio"]).all())
