"""The About page shows each model's own checks (issue 13): shortcut probe and heatmap on the lesion."""

from __future__ import annotations

from models.registry import read_card, write_card
from tests.test_app_pages import app, make_weights


def test_about_shows_the_cards_checks_and_sources(tmp_path, monkeypatch):
    wdir = make_weights(tmp_path, {"torch_cnn": 0.5})
    card = read_card(wdir / "torch_cnn.json")
    card["data"] = {"sources": [{"name": "kaggle", "counts": {"train": {"benign": 3, "malignant": 4},
                                                               "val": {"benign": 1, "malignant": 1}}},
                                {"name": "ham10000", "counts": {"train": {"benign": 10, "malignant": 2},
                                                                 "val": {"benign": 2, "malignant": 1}}}]}
    card["checks"] = {"per_folder": {"ham10000": {"n": 30, "auc": 0.8123}, "skin-cancer-malignant-vs-benign": {
                                         "n": 12, "auc": 0.9456}},
                      "shortcut_probe": {"n": 50, "dark_rim": {"flipped": 0.04, "familiarity": {
                                             "n": 50, "unfamiliar": 5, "accuracy_familiar": 0.6,
                                             "accuracy_unfamiliar": 0.8}},
                                         "blue_cast": {"flipped": 0.02}, "colour_chart": {"flipped": 0.1}},
                      "heatmap_on_lesion": {"n": 40, "peak_on_lesion": 0.75, "mass_on_lesion": 0.52,
                                            "lesion_share_of_frame": 0.33, "method": "layercam",
                                            "log_odds_drop": {"share": 0.2, "heatmap": 0.61, "random": 0.12}},
                      "familiarity": {"validation": {"n": 200, "unfamiliar": 10, "accuracy_familiar": 0.7,
                                                     "accuracy_unfamiliar": None}}}
    card["notes"] = "Fine-tuned 3 epochs from its two-stage weights with the dark rim on 80 % of photos."
    write_card(wdir / "torch_cnn.json", card)
    monkeypatch.setenv("LESION_LENS_WEIGHTS_DIR", str(wdir))
    at = app("pages/about.py")
    table = at.table[0].value
    rows = dict(zip(table.iloc[:, 0], table["PyTorch CNN"]))
    assert rows["data"] == "kaggle: 7 train + 2 val; ham10000: 12 train + 3 val"
    assert rows["validation AUC per source folder (photos)"] == "ham10000 0.812 (30) · Kaggle 0.946 (12)"
    assert rows["benign labels flipped by a dark rim / blue cast / colour chart"] == "rim 4% · blue 2% · chart 10%"
    assert rows["heatmap peak on the lesion"] == "75% of 40 photos (layercam)"
    assert rows["heatmap mass on the lesion"] == "52% (lesion covers 33%)"
    assert rows["answer's log-odds drop when the heatmap's hottest fifth is blurred"] == "0.61 (random blobs 0.12)"
    assert rows["unfamiliar-photo warning (accuracy familiar / unfamiliar)"] == (
        "validation 5% flagged (accuracy 0.70 / –) · dark rim 10% flagged (accuracy 0.60 / 0.80)")
    # how the model was made, from its card's notes
    assert ("**PyTorch CNN.** Fine-tuned 3 epochs from its two-stage weights with the dark rim on 80 % of photos."
            in [m.value for m in at.markdown])
    # a card without checks says so instead of inventing numbers
    assert dict(zip(table.iloc[:, 0], table["EfficientNet-Lite0"])).get("heatmap peak on the lesion", "–") == "–"
