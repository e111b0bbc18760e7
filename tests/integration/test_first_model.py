"""`finsent up`'s first model: trained when the registry has no champion, promoted, and reported in a few lines."""

import csv
import logging
import re

from finsent.settings import Settings
from finsent.system import ensure_model
from tests.model_fixtures import tiny_rows


def test_the_first_model_is_trained_promoted_and_summed_up_in_short_lines(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = tmp_path / "train.csv"
    with data.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows(tiny_rows(20))
    settings = Settings(state_dir=tmp_path / "state", train_data=str(data), bootstrap_epochs=1, device="cpu",
                        elasticsearch_url="http://127.0.0.1:9")  # nothing listens: the mirror is skipped
    said: list[str] = []
    # stderr as no terminal (as under `make up > up.log`, even with pytest -s): log lines with an ETA stand in
    # for the bar
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.setenv("TTY_COMPATIBLE", "0")
    with caplog.at_level(logging.INFO, logger="model.training"):
        version = ensure_model(settings, echo=said.append)
    logged = [record.getMessage() for record in caplog.records]
    assert any("ETA" in line for line in logged), logged
    assert any(re.fullmatch(r"epoch 1/1 done after \d+ s: loss \d+\.\d{4}, validation accuracy [01]\.\d{3}, "
                            r"macro-F1 [01]\.\d{3}", line) for line in logged), logged
    promoted = said.index(f"model: {version} promoted")
    assert said[promoted + 1].startswith("       validation: n=")
    assert all(len(line) <= 120 for line in said[promoted:]), said  # no metrics dict dumped into one line
    assert ensure_model(settings, echo=said.append) == version and said[-1] == f"model: champion {version}"
