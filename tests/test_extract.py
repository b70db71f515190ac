"""`edgeprune features`: .wav files and DCASE-style lists become the folder layout that --data reads."""

import numpy as np
from scipy.io import wavfile

from edgeprune.cli import main
from edgeprune.data import synthetic
from edgeprune.data.datasets import load_folder


def write_scene(path, label, index):
    rng = np.random.default_rng([5, index])
    audio = synthetic.render_scene(label, "A", rng, 0.0)
    wavfile.write(path, synthetic.SAMPLE_RATE, (audio * 32767).astype(np.int16))


def test_wavs_and_lists_become_a_loadable_feature_folder(tmp_path, capsys):
    audio = tmp_path / "audio"
    audio.mkdir()
    lists = {}
    for split, n in (("train", 4), ("test", 2)):
        rows = ["filename\tscene_label"]
        for i in range(n):
            label = i % 2
            name = f"audio/{synthetic.CLASSES[label]}-x-{split}{i}-{'a' if i % 2 else 's4'}.wav"
            write_scene(tmp_path / name, label, i + (10 if split == "test" else 0))
            rows.append(f"{name}\t{synthetic.CLASSES[label]}")
        lists[split] = tmp_path / f"{split}.csv"
        lists[split].write_text("\n".join(rows) + "\n")
    out = tmp_path / "features"
    assert main(["features", str(tmp_path), "--split", f"train={lists['train']}", "--split", f"test={lists['test']}",
                 "--sample-rate", "16000", "--out", str(out)]) == 0
    data = load_folder(out)
    assert data.classes == ["airport", "bus"]
    assert data["test"].x.shape == (2, 40, 500) and data["test"].y.tolist() == [0, 1]
    assert data["test"].devices.tolist() == ["s4", "a"]
    # the features are the same extraction as the synthetic pipeline's (up to 16-bit quantisation of the wav)
    direct = synthetic.log_mel(synthetic.render_scene(0, "A", np.random.default_rng([5, 10]), 0.0), synthetic.FEATURE_CONFIG)
    assert np.abs(data["test"].x[0] - direct).mean() < 0.05


def test_missing_list_and_missing_audio(tmp_path, capsys):
    assert main(["features", str(tmp_path), "--split", f"train={tmp_path / 'no.csv'}", "--split",
                 f"test={tmp_path / 'no.csv'}", "--out", str(tmp_path / "f")]) == 2
    assert "file list not found" in capsys.readouterr().err
    (tmp_path / "l.csv").write_text("a.wav\tbus\n")
    assert main(["features", str(tmp_path), "--split", f"train={tmp_path / 'l.csv'}", "--split",
                 f"test={tmp_path / 'l.csv'}", "--out", str(tmp_path / "f")]) == 2
    assert "audio file not found" in capsys.readouterr().err
    assert not (tmp_path / "f").exists()
