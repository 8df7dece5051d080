"""time_limit_minutes stops a run with a checkpoint; re-running continues it."""

import datasets
import settings
from training.checkpoints import latest_checkpoint, load_checkpoint
from training.magicpoint import MagicPointTask
from training.trainer import Trainer
from utils.config import load_config


def test_time_limit_stops_with_a_checkpoint(monkeypatch):
    monkeypatch.setitem(datasets.DATASETS, "squares", "tests.fixtures.squares:Squares")
    clock = iter(range(0, 10_000, 30))  # every call to the clock advances 30 s
    monkeypatch.setattr("training.trainer.time.monotonic", lambda: next(clock))
    cfg = load_config(None, ["data.dataset=squares", "model.batch_size=4", "num_workers=0", "precision=fp32",
                             "device=cpu", "train_iter=50", "save_interval=100", "time_limit_minutes=1.5"])
    Trainer(cfg, "limited", MagicPointTask(cfg)).train()
    ck = load_checkpoint(latest_checkpoint(settings.exper_path() / "limited" / "checkpoints"))
    assert 1 <= ck["n_iter"] < 50
