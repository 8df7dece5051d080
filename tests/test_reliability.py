"""Reliability (docs/RELIABILITY.md): no hang, no lost or mixed file, one line instead of a traceback.

Each test is a case of a fault-injection sweep: a full disk (ENOSPC simulated at the writer), two
runs of one name, a typo in a number, weights that do not fit, degenerate images, a non-finite
run. The bad-input corpus checks, for each case: exit code 2, exactly one ``error:`` line naming
the file or key, and nothing already written lost. Kills and signals: tests/test_crash_consistency.py.
"""
import argparse
import contextlib
import errno
import json
import os
import shutil
import threading

import cv2
import numpy as np
import pytest
import torch
import yaml

import datasets
import evaluation
import export
import settings
import train4
from exporters import detector_labels as ha_exporter
from models import SuperPointNet, build_model, build_network
from models.stand_in import seeded_stand_in
from tests.fixtures.image_trees import folder_tree
from training.checkpoints import checkpoint_path, latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from training.magicpoint import MagicPointTask
from training.tensorboard import EventLog, read_scalars
from training.trainer import NonFiniteLoss, Trainer
from utils.cli import one_line
from utils.config import ConfigError, load_config, load_defaults, load_ranges
from utils.io import FolderBusy, ImageReadError, atomic_write_bytes, folder_lock, read_image_gray


@pytest.fixture(autouse=True)
def squares_dataset(monkeypatch):
    monkeypatch.setitem(datasets.DATASETS, "squares", "tests.fixtures.squares:Squares")


TINY = ["data.dataset=squares", "model.batch_size=2", "model.eval_batch_size=2", "num_workers=0",
        "precision=fp32", "device=cpu", "train_iter=4", "save_interval=2", "tensorboard_interval=1",
        "validation_interval=100", "train_show_interval=100"]


def tiny(**over):
    return load_config(None, TINY + [f"{k}={v}" for k, v in over.items()])


def tiny_yaml(tmp_path, **over):
    """The tiny training settings as a config file, for the command lines."""
    path = tmp_path / "tiny.yaml"
    lines = [t.split("=", 1) for t in TINY] + [[k, str(v)] for k, v in over.items()]
    tree: dict = {}
    for key, value in lines:
        node = tree
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    path.write_text(yaml.safe_dump(tree))
    return path


def temp_files(folder):
    return sorted(str(p) for p in folder.rglob(".*.tmp")) if folder.exists() else []


def snapshot(folder):
    """Every file under ``folder`` with its bytes (to prove nothing was lost or changed)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock"}


# ---------------------------------------------------------------- configs: ranges, YAML 1.1 floats
def test_every_count_and_size_of_the_defaults_has_a_range():
    import fnmatch

    from utils.config import _numeric_leaves

    ranges = load_ranges()
    ints = [k for k, v in _numeric_leaves(load_defaults())
            if isinstance(v, int) or (isinstance(v, list) and all(isinstance(x, int) for x in v))]
    unranged = [k for k in ints if not any(fnmatch.fnmatchcase(k, p) for p in ranges)]
    assert ints and not unranged
    for key, value in _numeric_leaves(load_defaults()):  # the defaults satisfy their own ranges
        for p, (lo, hi) in ranges.items():
            if fnmatch.fnmatchcase(key, p):
                for v in value if isinstance(value, list) else [value]:
                    assert (lo is None or v >= lo) and (hi is None or v <= hi), (key, v, p)


def test_every_range_names_a_default_key():
    """A range left behind by a removed key (e.g. model.nn_thresh) would silently check nothing."""
    import fnmatch

    def keys(tree, prefix=""):
        for k, v in tree.items():
            yield from keys(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"]

    defaults = list(keys(load_defaults()))
    assert [p for p in load_ranges() if not any(fnmatch.fnmatchcase(k, p) for k in defaults)] == []


@pytest.mark.parametrize("override, key", [("model.batch_size=-3", "model.batch_size"),  # hung at step 0
                                           ("save_interval=0", "save_interval"),        # ZeroDivisionError
                                           ("tensorboard_interval=0", "tensorboard_interval"),
                                           ("data.homography_adaptation.num=0", "data.homography_adaptation.num"),
                                           ("evaluation.ransac.confidence=2", "evaluation.ransac.confidence")])
def test_out_of_range_values_name_the_key(override, key):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert f"--set {override}: key '{key}' must be" in str(e.value) and "\n" not in str(e.value)


def test_out_of_range_value_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  batch_size: 0\n")
    with pytest.raises(ConfigError, match=rf"^{path}: key 'model.batch_size' must be >= 1, got 0$"):
        load_config(path)


def test_yaml_1_1_floats_are_accepted_for_float_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  learning_rate: 1e-4\n  grad_clip: 5E+1\n")  # YAML 1.1 reads both as text
    cfg = load_config(path, ["model.weight_decay=1e6"])
    assert cfg["model"]["learning_rate"] == 1e-4 and cfg["model"]["grad_clip"] == 50.0
    assert cfg["model"]["weight_decay"] == 1e6
    with pytest.raises(ConfigError, match="'model.batch_size' must be int"):  # int keys stay strict
        load_config(None, ["model.batch_size=1e3"])
    with pytest.raises(ConfigError, match="'model.learning_rate' must be float"):
        load_config(None, ["model.learning_rate=1e-4x"])


# ---------------------------------------------------------------- the bad-input corpus
def _save_plain(path, model):
    torch.save(model.state_dict(), path)
    return path


def _case_typo_batch_size(tmp_path):
    return ["train_base", str(tiny_yaml(tmp_path)), "exp", "--set", "model.batch_size=-3"], "model.batch_size"


def _case_zero_save_interval(tmp_path):
    return ["train_base", str(tiny_yaml(tmp_path)), "exp", "--set", "save_interval=0"], "save_interval"


def _case_resume_with_another_descriptor_dim(tmp_path):
    ck = save_checkpoint(settings.exper_path() / "exp" / "checkpoints", 2,
                         build_network("SuperPointNet_gauss2"))
    return (["train_base", str(tiny_yaml(tmp_path)), "exp", "--set", "model.params={descriptor_dim: 128}"],
            f"{ck}: weights do not fit SuperPointNet_gauss2: 78 of 84 tensors fit, 6 of another shape (convDb.weight")


def _case_resume_after_model_name_change(tmp_path):
    ck = save_checkpoint(settings.exper_path() / "exp" / "checkpoints", 2,
                         build_network("SuperPointNet_gauss2"))
    return (["train_base", str(tiny_yaml(tmp_path)), "exp", "--set", "model.name=SuperPointNet"],
            f"{ck}: weights do not fit SuperPointNet")


def _case_pretrained_of_another_layout(tmp_path):
    weights = _save_plain(tmp_path / "sp.pth", SuperPointNet())
    return (["train_base", str(tiny_yaml(tmp_path)), "exp", "--set", f"pretrained={weights}"],
            f"{weights}: weights do not fit SuperPointNet_gauss2: 8 of 84 tensors fit")


def _case_pickled_pretrained(tmp_path):
    weights = tmp_path / "pickled.pth"
    torch.save({"model_state_dict": SuperPointNet().state_dict(), "args": argparse.Namespace(a=1)}, weights)
    return (["train_base", str(tiny_yaml(tmp_path)), "exp", "--set", f"pretrained={weights}",
             "--set", "model.name=SuperPointNet"],
            f"{weights}: torch.load(weights_only=True) refused it (Unsupported global: argparse.Namespace); "
            f"if you trust this file, set the top-level config key weights_only: false (--set weights_only=false)")


def _case_same_name_twice(tmp_path, stack):
    stack.enter_context(folder_lock(settings.exper_path() / "exp", "training"))  # another run holds it
    return (["train_base", str(tiny_yaml(tmp_path)), "exp"],
            f"{settings.exper_path() / 'exp'}: another training is using this folder (pid {os.getpid()})")


CORPUS = [_case_typo_batch_size, _case_zero_save_interval, _case_resume_with_another_descriptor_dim,
          _case_resume_after_model_name_change, _case_pretrained_of_another_layout, _case_pickled_pretrained,
          _case_same_name_twice]


@pytest.mark.parametrize("case", CORPUS, ids=[c.__name__[6:] for c in CORPUS])
def test_bad_input_corpus(case, tmp_path, capsys):
    with contextlib.ExitStack() as stack:
        argv, named = case(tmp_path, stack) if case is _case_same_name_twice else case(tmp_path)
        exp = settings.exper_path() / "exp"
        before = snapshot(exp)
        rc = train4.main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert named in lines[0]
    assert snapshot(exp) == before  # nothing already written is lost or changed


def test_partial_pretrained_load_only_when_allowed(tmp_path):
    # a 128-dimensional descriptor head: 6 tensors of the descriptor head (convDb, bnDb) of another shape
    weights = _save_plain(tmp_path / "d128.pth", build_network("SuperPointNet_gauss2",
                                                               {"descriptor_dim": 128}))
    with pytest.raises(ValueError, match="78 of 84 tensors fit, 6 of another shape"):
        Trainer(tiny(pretrained=str(weights)), "strict", MagicPointTask(tiny()))._build()
    cfg = tiny(pretrained=str(weights), allow_partial_load="true")
    trainer = Trainer(cfg, "partial", MagicPointTask(cfg))
    trainer._build()
    own, src = trainer.net.state_dict(), torch.load(weights, weights_only=True)
    fitting = [k for k in src if k in own and own[k].shape == src[k].shape]
    assert len(fitting) == 78
    for k in fitting:
        assert torch.equal(own[k].cpu(), src[k])
    # MagicLeap's layout in the batch-norm network: only the heads' names match, so even an allowed
    # partial load is refused, naming the network the file is for
    magicleap = _save_plain(tmp_path / "sp.pth", SuperPointNet())
    cfg = tiny(pretrained=str(magicleap), allow_partial_load="true")
    with pytest.raises(ValueError, match=r"8 of 84 tensors fit, .*MagicLeap SuperPoint weights .*"
                                         r"set model\.name: SuperPointNet$"):
        Trainer(cfg, "other_layout", MagicPointTask(cfg))._build()


def test_evaluation_refuses_partial_and_mixed_sets_unless_allowed(tmp_path, embedded, capsys):
    pred = export_embedded(tmp_path, "ev", eval_iter=3)
    (pred / "1.npz").unlink()
    capsys.readouterr()
    assert evaluation.main([str(pred), "-r", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"error: {pred}: partial or mixed export: 2 of 3 pairs") \
        and "--allow-partial" in err
    assert evaluation.main([str(pred), "-r", "--no-progress", "--allow-partial"]) == 0
    assert "warning:" in capsys.readouterr().err
    results = json.loads((pred.parent / "results.json").read_text())
    assert results["num_pairs"] == 2
    # a file of another export in the set: mixed
    other = export_embedded(tmp_path, "other", eval_iter=3, seed_weights=1)
    shutil.copy(other / "1.npz", pred / "1.npz")
    capsys.readouterr()
    assert evaluation.main([str(pred), "-r", "--no-progress"]) == 2
    assert "1 changed since the export (e.g. 1.npz)" in capsys.readouterr().err
    # a hand-made folder without manifest: a gap in the numbering is a partial set
    hand = tmp_path / "hand" / "predictions"
    hand.mkdir(parents=True)
    shutil.copy(other / "0.npz", hand / "0.npz")
    shutil.copy(other / "2.npz", hand / "2.npz")
    assert evaluation.main([str(hand), "-r", "--no-progress"]) == 2
    assert "1 missing, e.g. 1.npz" in capsys.readouterr().err


# ---------------------------------------------------------------- exports: all or nothing
def export_embedded(tmp_path, name, eval_iter=3, seed_weights=0, extra=()):
    weights = tmp_path / f"w{seed_weights}.pth"
    if not weights.exists():
        torch.save(seeded_stand_in(SuperPointNet(), seed=seed_weights).state_dict(), weights)
    rc = export.main(["export_descriptor", "configs/magicpoint_repeatability_embedded.yaml", name,
                      "--set", f"pretrained={weights}", "--set", "model.name=SuperPointNet",
                      "--set", f"eval_iter={eval_iter}", "--set", "data.preprocessing.resize=[64, 80]",
                      "--set", "model.subpixel.enable=false", "--set", "num_workers=0", *extra])
    assert rc == 0
    return settings.exper_path() / name / "predictions"


def test_failed_reexport_keeps_the_previous_export(tmp_path, embedded, capsys):
    root = tmp_path / "hpatches"  # a plain HPatches folder (the embedded set would rebuild itself)
    shutil.copytree(embedded, root)
    pred = export_embedded(tmp_path, "keep", eval_iter=3, extra=["--set", f"data.root={root}"])
    before = snapshot(pred.parent)
    assert sorted(p.name for p in pred.iterdir()) == ["0.npz", "1.npz", "2.npz"]
    manifest = json.loads((pred.parent / "manifest.json").read_text())
    assert manifest["expected"] == manifest["completed"] == 3
    assert sorted(manifest["files"]) == ["0.npz", "1.npz", "2.npz"]
    # the third pair's second image cannot be read: the re-export fails on it
    seq = sorted(p for p in root.iterdir() if p.is_dir())[0]
    victim = sorted(p for p in seq.iterdir() if p.suffix == ".ppm")[3]
    victim.write_bytes(b"P6 broken")
    capsys.readouterr()
    assert export.main(["export_descriptor", "configs/magicpoint_repeatability_embedded.yaml", "keep",
                        "--set", f"pretrained={tmp_path / 'w0.pth'}", "--set", "model.name=SuperPointNet",
                        "--set", "eval_iter=3", "--set", "data.preprocessing.resize=[64, 80]",
                        "--set", f"data.root={root}",
                        "--set", "model.subpixel.enable=false", "--set", "model.nms=2", "--set", "num_workers=0"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and str(victim) in err
    assert snapshot(pred.parent) == before  # predictions, manifest and config.yml of the good export
    assert evaluation.main([str(pred), "-r", "--no-progress"]) == 0


def test_two_exports_into_one_folder_do_not_interleave(tmp_path, capsys):
    folder = settings.exper_path() / "busy"
    with folder_lock(folder, "export"):
        rc = export.main(["export_descriptor", "configs/magicpoint_repeatability_embedded.yaml", "busy",
                          "--set", "pretrained=nope.pth"])
    assert rc == 2
    assert capsys.readouterr().err.strip() == (f"error: {folder}: another export is using this folder "
                                               f"(pid {os.getpid()}); wait for it to end or choose another name")


# ---------------------------------------------------------------- homography adaptation re-runs
@pytest.fixture
def ha_weights(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "magicpoint_random.pth"
    torch.save(build_network("SuperPointNet_gauss2").state_dict(), path)
    return path


def ha_config(root, weights):
    return load_config("configs/magicpoint_folder_export.yaml", [
        f"pretrained={weights}", "data.preprocessing.resize=[32,48]", "data.homography_adaptation.num=2",
        "data.homography_adaptation.batch_size=2", "num_workers=0", "precision=fp32", "device=cpu",
        "model.top_k=20", f"data.root={root}"])


def test_homography_adaptation_rerun_redoes_corrupt_labels_and_missing_pictures(tmp_path, ha_weights):
    root = folder_tree(tmp_path / "imgs")
    cfg = ha_config(root, ha_weights)
    out = settings.exper_path() / "ha"
    first = ha_exporter.export(cfg, out, output_images=True)
    assert first.done == 6
    labels = out / "predictions" / "train" / "a" / "x.npz"
    picture = out / "images" / "train" / "a" / "y.png"
    good_labels, good_picture = labels.read_bytes(), picture.read_bytes()
    labels.write_bytes(good_labels[: len(good_labels) // 2])  # cut by a full disk
    picture.unlink()                                        # never drawn: the disk was full
    again = ha_exporter.export(cfg, out, output_images=True)
    assert again == ha_exporter.ExportStats(done=1, skipped=5, failed=0)
    assert labels.read_bytes() == good_labels  # the same seed: the same labels again
    assert picture.read_bytes() == good_picture


def test_degenerate_images_are_named_per_file(tmp_path, ha_weights):
    root = folder_tree(tmp_path / "imgs")
    cv2.imwrite(str(root / "tiny.png"), np.full((1, 1), 128, np.uint8))
    nan = np.full((40, 56), 0.5, np.float32)
    nan[3, 4] = np.nan
    assert cv2.imwrite(str(root / "nan.tiff"), nan)
    for name, why in (("tiny.png", "1x1 pixels, smaller than one 8x8 cell"), ("nan.tiff", "NaN or infinite")):
        with pytest.raises(ImageReadError, match=why) as e:
            read_image_gray(root / name)
        assert str(root / name) in str(e.value)
    cfg = ha_config(root, ha_weights)
    with pytest.warns(UserWarning) as record:
        stats = ha_exporter.export(cfg, settings.exper_path() / "ha")
    assert stats.done == 6 and stats.failed == 2
    messages = " ".join(str(w.message) for w in record)
    assert str(root / "tiny.png") in messages and str(root / "nan.tiff") in messages
    for p in (settings.exper_path() / "ha" / "predictions").rglob("*.npz"):
        assert np.isfinite(np.load(p)["pts"]).all()


# ---------------------------------------------------------------- training: disks, locks, non-finite
def test_full_disk_at_a_checkpoint_names_the_file_and_keeps_the_last_one(monkeypatch):
    cfg = tiny()
    real_fsync = os.fsync
    ckpts = settings.exper_path() / "full" / "checkpoints"

    def fsync(fd):  # the disk fills up while the second checkpoint is written
        if (ckpts / "superPointNet_2_checkpoint.pth.tar").exists():
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError) as e:
        Trainer(cfg, "full", MagicPointTask(cfg)).train()
    line = one_line(e.value)
    assert line == f"[Errno 28] No space left on device: '{checkpoint_path(ckpts, 4)}'"
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert [i for i, _ in list_checkpoints(ckpts)] == [2]
    assert load_checkpoint(checkpoint_path(ckpts, 2))["n_iter"] == 2
    assert temp_files(settings.exper_path() / "full") == []


def test_full_disk_under_tensorboard_never_blocks_training(monkeypatch, capsys):
    """The TensorBoard folder on a full disk: training goes on, checkpoints included, one warning."""
    from tensorboardX import record_writer

    real = record_writer.RecordWriter.write
    calls = {"n": 0}

    def write(self, data):
        calls["n"] += 1
        if calls["n"] > 2:  # the file header went through; then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, data)

    monkeypatch.setattr(record_writer.RecordWriter, "write", write)
    cfg = tiny(train_iter=3, save_interval=1, tensorboard_interval=1)
    result = {}
    # a thread, so that a writer that blocks fails this test instead of hanging the suite
    worker = threading.Thread(target=lambda: result.update(
        out=Trainer(cfg, "tbfull", MagicPointTask(cfg)).train()), daemon=True)
    worker.start()
    worker.join(timeout=240)
    assert not worker.is_alive(), "training blocked on the TensorBoard writer"
    assert "out" in result
    ckpts = settings.exper_path() / "tbfull" / "checkpoints"
    assert [i for i, _ in list_checkpoints(ckpts)] == [1, 2, 3]
    assert capsys.readouterr().err.count("TensorBoard logging to") == 1


def test_event_log_purges_the_steps_a_resumed_run_logs_again(tmp_path):
    first = EventLog(tmp_path / "runs")
    for step in (1, 2, 3, 4):  # steps 3 and 4 came after the last checkpoint (2) and are redone
        first.add_scalar("train/loss", float(step), step)
    first.close()
    second = EventLog(tmp_path / "runs", purge_step=3)
    for step in (3, 4, 5):
        second.add_scalar("train/loss", 10.0 * step, step)
    second.close()
    assert first.path != second.path
    assert read_scalars(tmp_path / "runs", "train/loss") == {1: 1.0, 2: 2.0, 3: 30.0, 4: 40.0, 5: 50.0}


def test_stale_checkpoint_temp_files_are_removed():
    cfg = tiny()
    ckpts = settings.exper_path() / "stale" / "checkpoints"
    save_checkpoint(ckpts, 4, build_model(cfg["model"]))  # already at train_iter: nothing to train
    stale = ckpts / ".superPointNet_10_checkpoint.pth.tar.k2j4x9q1.tmp"
    stale.write_bytes(b"half a checkpoint")
    config_tmp = settings.exper_path() / "stale" / ".config.yml.abcd1234.tmp"
    config_tmp.write_text("half")
    other = ckpts / "notes.tmp"  # not one of ours: kept
    other.write_text("mine")
    Trainer(cfg, "stale", MagicPointTask(cfg)).train()
    assert not stale.exists() and not config_tmp.exists() and other.exists()


def test_a_huge_learning_rate_never_leaves_a_bad_last_good_checkpoint():
    cfg = tiny(**{"model.learning_rate": "1.0e+30", "save_interval": 1, "train_iter": 3})
    with pytest.raises(NonFiniteLoss) as e:
        Trainer(cfg, "lr", MagicPointTask(cfg)).train()
    ckpts = settings.exper_path() / "lr" / "checkpoints"
    good = latest_checkpoint(ckpts)
    named = str(e.value).split("The last good checkpoint is ", 1)[1]
    assert named == (str(good) if good else "(none yet)")
    if good is not None:  # what it names gives a finite loss: its weights are sane
        w = load_checkpoint(good)["model_state_dict"]
        assert max(float(v.abs().max()) for v in w.values() if v.is_floating_point()) < 1e6
    assert list(ckpts.glob("*.nonfinite"))  # the one whose weights gave the non-finite loss, set aside
    sane = tiny(train_iter=2, save_interval=1)  # resuming with a sane learning rate works
    Trainer(sane, "lr", MagicPointTask(sane)).train()
    assert load_checkpoint(latest_checkpoint(ckpts))["n_iter"] == 2


def test_atomic_write_on_a_full_disk_names_the_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "out" / "x.bin"
    atomic_write_bytes(target, b"old")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as e:
        atomic_write_bytes(target, b"new")
    assert e.value.errno == errno.ENOSPC and str(target) in str(e.value)
    assert target.read_bytes() == b"old" and temp_files(tmp_path) == []


def test_folder_lock_is_exclusive_and_released(tmp_path):
    with folder_lock(tmp_path / "f"):
        with pytest.raises(FolderBusy, match=f"{tmp_path / 'f'}: another run is using this folder"):
            with folder_lock(tmp_path / "f"):
                pass
    with folder_lock(tmp_path / "f"):  # released when the holder leaves
        pass
