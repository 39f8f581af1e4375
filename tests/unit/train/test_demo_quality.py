"""The demo data makes routing worth doing: xl beats lite, and mostly on informative requests.

Trains lite and xl at the default spec's full demo size (about a minute on 2 cores).
"""

from __future__ import annotations

import pytest
from helpers import DEFAULT_SPEC

from toolkit.spec import load_spec
from toolkit.train import train

pytestmark = pytest.mark.slow


def test_xl_gain_over_lite_is_concentrated_on_informative_requests_when_trained(tmp_path) -> None:
    spec = load_spec(DEFAULT_SPEC)
    report = train(spec, tmp_path, tiers=("lite", "xl"))
    lite, xl = report.tiers["lite"], report.tiers["xl"]
    assert 0.01 < report.holdout_ctr < 0.10
    assert xl.ne < lite.ne - 0.02
    gain_informative = lite.ne_informative - xl.ne_informative
    gain_other = lite.ne_other - xl.ne_other
    assert gain_informative > 0.05
    assert gain_informative > 5 * max(gain_other, 0.0) + 0.03
