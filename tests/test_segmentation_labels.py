import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from utils import coco_panoptic_to_cs34, create_cs34_categories_json
from utils.segmentation_labels import (
    COCO_TO_CS34,
    CS34_TO_CS4,
    categories_json,
    coco_category_lut,
    cs34_lut,
    panoptic_to_cs34,
)

REPO = Path(__file__).resolve().parent.parent

# categories of the two sample images and the cs34 id each must get (known answers)
SAMPLE_EXPECTED = {"person": 24, "sports ball": 5, "tree-merged": 21, "sky-other-merged": 23,
                   "grass-merged": 22, "truck": 27, "horse": 5, "gravel": 22}
SAMPLE_VOID_PIXELS = {"000000142238.png": 2712, "000000439180.png": 7189}


def test_cli_converts_real_sample_segment_by_segment(tmp_path, shared_data):
    work = tmp_path / "coco"
    shutil.copytree(shared_data / "coco_sample" / "annotations", work / "annotations")
    proc = subprocess.run(
        [sys.executable, str(REPO / "utils" / "coco_panoptic_to_cs34.py"), "--src", "annotations/panoptic_val2017",
         "--ann", "annotations/panoptic_val2017.json", "--categories", "annotations/panoptic_coco_categories.json",
         "--dst", "panoptic_cs34_val2017"], cwd=work, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    ann = json.loads((work / "annotations" / "panoptic_val2017.json").read_text())
    categories = json.loads((work / "annotations" / "panoptic_coco_categories.json").read_text())
    names = {c["id"]: c["name"] for c in categories}
    assert {n: COCO_TO_CS34[n] for n in SAMPLE_EXPECTED} == SAMPLE_EXPECTED
    seen = set()
    for a in ann["annotations"]:
        out = cv2.imread(str(work / "panoptic_cs34_val2017" / a["file_name"]), cv2.IMREAD_UNCHANGED)
        bgr = cv2.imread(str(work / "annotations" / "panoptic_val2017" / a["file_name"]), cv2.IMREAD_COLOR)
        assert out.dtype == np.uint8 and out.shape == bgr.shape[:2]
        b, g, r = (bgr[..., i].astype(np.int64) for i in range(3))
        ids = r + 256 * g + 256 * 256 * b
        covered = np.zeros(ids.shape, bool)
        for s in a["segments_info"]:
            m = ids == s["id"]
            assert m.sum() == s["area"]
            name = names[s["category_id"]]
            seen.add(name)
            assert (out[m] == SAMPLE_EXPECTED[name]).all(), (a["file_name"], name)
            covered |= m
        void = ids == 0
        assert (void | covered).all()
        assert void.sum() == SAMPLE_VOID_PIXELS[a["file_name"]] and (out[void] == 0).all()
    assert seen == set(SAMPLE_EXPECTED)


def test_converter_errors_are_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert coco_panoptic_to_cs34.main(["--src", "nope", "--ann", "a.json", "--dst", "out"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: nope") and "not found" in err[0]
    (tmp_path / "pngs").mkdir()
    (tmp_path / "a.json").write_text("{broken")
    assert coco_panoptic_to_cs34.main(["--src", "pngs", "--ann", "a.json", "--dst", "out"]) == 2
    assert "a.json: not valid JSON" in capsys.readouterr().err


def test_panoptic_decoding_uses_all_three_channels():
    # segment ids that need the G and B channels; one id not in segments_info; one unknown category
    ids = np.array([[0, 300, 300], [70000, 70000, 12345], [7, 7, 0]], dtype=np.int64)
    rgb = np.stack([ids % 256, (ids // 256) % 256, ids // 65536], axis=-1).astype(np.uint8)
    cats = [{"id": 1, "name": "person"}, {"id": 149, "name": "road"}, {"id": 250, "name": "mystery"}]
    info = [{"id": 300, "category_id": 1}, {"id": 70000, "category_id": 149}, {"id": 7, "category_id": 250}]
    out = panoptic_to_cs34(rgb, info, coco_category_lut(cats))
    assert out.dtype == np.uint8
    assert out.tolist() == [[0, 24, 24], [7, 7, 0], [0, 0, 0]]


def test_table_covers_all_133_coco_panoptic_categories(shared_data):
    cats = json.loads((shared_data / "coco_sample/annotations/panoptic_coco_categories.json").read_text())
    assert len(cats) == 133 and {c["name"] for c in cats} == set(COCO_TO_CS34)
    assert all(0 <= v <= 33 for v in COCO_TO_CS34.values())


def test_cs34_categories_json(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert create_cs34_categories_json.main(["--dst", "annotations/panoptic_cs34_categories.json"]) == 0
    cats = json.loads((tmp_path / "annotations/panoptic_cs34_categories.json").read_text())
    assert len(cats) == 34 and [c["id"] for c in cats] == list(range(34))
    by_id = {c["id"]: c for c in cats}
    for i, name in {0: "unlabeled", 7: "road", 11: "building", 21: "vegetation", 23: "sky", 24: "person",
                    26: "car", 33: "bicycle"}.items():
        assert by_id[i]["name"] == name
    assert by_id[7]["color"] == [128, 64, 128] and by_id[26]["color"] == [0, 0, 142]
    assert by_id[24]["isthing"] == 1 and by_id[7]["isthing"] == 0
    assert set(cats[0]) == {"id", "name", "color", "isthing", "supercategory"}


def test_cs4_file_and_mapping():
    committed = json.loads((REPO / "utils" / "cs4_categories.json").read_text())
    assert committed == categories_json("cs4")
    assert [c["name"] for c in committed] == ["flat", "structure", "sky", "dynamic"]
    # every non-void cs34 id has exactly one cs4 class; void ids have none
    assert sorted(CS34_TO_CS4) == list(range(4, 34))
    lut = cs34_lut("cs4", ignore_index=255)
    assert [lut[i] for i in (0, 1, 2, 3, 7, 11, 21, 23, 24, 26, 34, 255)] == [255] * 4 + [0, 1, 1, 2, 3, 3, 255, 255]
    lut = cs34_lut("cs34", ignore_index=250, ignore_void=True)
    assert lut[0] == 250 and lut[3] == 250 and lut[4] == 4 and lut[33] == 33 and lut[34] == 250
    assert cs34_lut("cs34", ignore_void=False)[0] == 0
    with pytest.raises(ValueError, match="label_set"):
        cs34_lut("cs5")


def test_docs_table_matches_the_module():
    rows = [line for line in (REPO / "docs" / "SEGMENTATION.md").read_text().splitlines()
            if line.startswith("| ") and line.split("|")[1].strip().isdigit()]
    assert len(rows) == 34
    doc_coco = {}
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        cs34_id, name, cs4 = int(cells[0]), cells[1], cells[5]
        assert categories_json("cs34")[cs34_id]["name"] == name
        assert cs4 == ("ignore" if cs34_id not in CS34_TO_CS4 else
                       f"{CS34_TO_CS4[cs34_id]} {categories_json('cs4')[CS34_TO_CS4[cs34_id]]['name']}")
        for coco in ([] if cells[6] == "-" else cells[6].split(", ")):
            doc_coco[coco] = cs34_id
    assert doc_coco == COCO_TO_CS34
