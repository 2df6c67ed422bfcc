"""Long runs of the shipped worlds (marked slow: `pytest -m slow`)."""

from __future__ import annotations

import json

import pytest

from hca.cli import main


@pytest.mark.slow
def test_default_world_lives_for_10000_ticks(tmp_path, worlds_dir):
    out = tmp_path / "life"
    assert main(["run", str(worlds_dir / "default.yaml"), "--steps", "10000", "--out", str(out),
                 "--quiet"]) == 0
    lines = [json.loads(text) for text in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["tick"] == 10000
    assert all(line["ledger"]["balanced"] for line in lines)
    for line in lines[1:]:
        life = line["life"]
        assert life["population"] > 0 and life["births"] > 0 and life["deaths"] > 0
    assert lines[-1]["life"]["deepest_generation"] >= 10
    populations = {line["life"]["population"] for line in lines[-10:]}
    assert len(populations) > 1  # still changing
