"""train4.py on bad input: one `error:` line naming what and where, non-zero exit, nothing lost."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run(*args, env=None):
    return subprocess.run([sys.executable, "train4.py", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=env)


def error_line(r):
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_missing_config_file():
    r = run("train_base", "configs/nope.yaml", "x")
    assert r.returncode == 2 and "configs/nope.yaml" in error_line(r) and "not found" in error_line(r)


def test_unknown_key_and_bad_value(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  batchsize: 3\n")
    r = run("train_base", str(bad), "x")
    assert r.returncode == 2 and "model.batchsize" in error_line(r) and str(bad) in error_line(r)
    r = run("train_base", "configs/magicpoint_shapes_quick.yaml", "x", "--set", "model.learning_rate=fast")
    assert r.returncode == 2 and "model.learning_rate" in error_line(r)


def test_missing_dataset_path():
    r = run("train_base", "configs/magicpoint_shapes_quick.yaml", "x", "--set", "data.dataset=cityscapes",
            "--set", "data.root=/nonexistent/cityscapes")
    assert r.returncode == 2 and "/nonexistent/cityscapes" in error_line(r)


def test_corrupt_image_names_the_file_and_keeps_checkpoints(tmp_path):
    """A corrupt image in a generated Synthetic Shapes set, read by a DataLoader worker."""
    import os
    env = dict(os.environ)
    env["SUPERPOINT_DATA_DIR"] = str(tmp_path / "data")
    env["SUPERPOINT_EXPER_DIR"] = str(tmp_path / "logs")
    env["SUPERPOINT_RUNS_DIR"] = str(tmp_path / "runs")
    common = ["--set", "data.generation.split_sizes={training: 2, validation: 1, test: 1}",
              "--set", "data.primitives=[draw_polygon]", "--set", "data.cache_in_memory=false",
              "--set", "model.batch_size=2", "--set", "num_workers=1", "--set", "precision=fp32",
              "--set", "save_interval=1", "--set", "tensorboard_interval=1"]
    r = run("train_base", "configs/magicpoint_shapes_quick.yaml", "bad", "--set", "train_iter=1", *common, env=env)
    assert r.returncode == 0, r.stderr
    ckpt = tmp_path / "logs" / "bad" / "checkpoints" / "superPointNet_1_checkpoint.pth.tar"
    assert ckpt.is_file()
    images = sorted((tmp_path / "data").rglob("draw_polygon/images/training/*.png"))
    for p in images:
        p.write_bytes(b"not a png")
    r = run("train_base", "configs/magicpoint_shapes_quick.yaml", "bad", "--set", "train_iter=3", *common, env=env)
    line = error_line(r)
    assert r.returncode == 2 and "not a readable image" in line and str(images[0].parent) in line
    assert ckpt.is_file()  # nothing already written is lost
