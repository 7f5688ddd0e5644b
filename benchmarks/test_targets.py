"""The issue's targets, each a ratio measured side by side in one process (rows interleaved
ABBA, medians of per-repetition ratios, see :mod:`protjepa.bench`). A target that is not met
fails with its measured value; ratios without a target are recorded, not judged."""
from __future__ import annotations

import pytest

from conftest import suite_config
from protjepa import bench


@pytest.fixture(scope="session")
def measured(suite) -> list[bench.Ratio]:
    rows = list(suite.rows.values())
    samples = bench.measure(rows, suite.batches, suite.config, suite.device)
    return bench.ratios(samples, suite.config, suite.device)


TARGETS = ["mlm / peer", "mlm packed / peer", "mlm_jepa_masked / floor", "mlm_jepa_ema_half / floor",
           f"packed / padded (crop {suite_config().packing_crop})"]


@pytest.mark.parametrize("name", TARGETS)
def test_target(measured, record_property, name):
    ratio = next((q for q in measured if q.name == name), None)
    if ratio is None:
        pytest.skip(f"{name}: not measured in this suite")
    record_property("value", round(ratio.value, 4))
    assert ratio.met, f"{name} = {ratio.value:.3f}, target {ratio.target} ({ratio.what})"


def test_report_every_ratio(measured, record_property):
    for q in measured:
        record_property(q.name, round(q.value, 4))
    print("\n" + "\n".join(f"{q.name:<36} {q.value:7.3f} {q.target or ''}" for q in measured))
