"""Both next-item losses train a model on a MovieLens slice (the sampled one never needs the
whole catalog per step)."""

from __future__ import annotations

import pytest
import torch

from models.data import load
from models.network import NetworkConfig
from models.train import TrainConfig, baselines, build_dataset, evaluate, fit, loss_kind
from tests.support.helpers import ML100K


@pytest.fixture(scope="module")
def data():
    history = load(f"ml100k:{ML100K}")
    keep = {str(u) for u in range(1, 151)}
    history.interactions = [x for x in history.interactions if x.user_id in keep]
    return build_dataset(history)


@pytest.mark.parametrize("loss", ["full", "sampled"])
def test_loss_trains_towards_popularity(data, loss) -> None:
    cfg = TrainConfig(
        epochs=4,
        patience=4,
        loss=loss,
        negatives=64,
        progress=False,
        network=NetworkConfig(hidden=32, max_positions=64),
    )
    result = fit(data, cfg)
    losses = result.curves["loss"]
    assert losses[-1] < losses[0]
    cases = data.cases("val")
    popular = baselines(data, cases)["most_popular"]["hr@20"]
    # four epochs on 150 users come near popularity (0.14 here); chance is about 0.012
    assert evaluate(result.net, cases, cfg.max_len)["hr@20"] >= 0.5 * popular


def test_auto_loss_follows_the_catalog_size() -> None:
    cfg = TrainConfig(full_softmax_max_items=1000)
    assert loss_kind(cfg, 1000) == "full" and loss_kind(cfg, 1001) == "sampled"
    with pytest.raises(ValueError, match="unknown loss"):
        loss_kind(TrainConfig(loss="bpr"), 10)


def test_weight_average_is_what_training_validates_and_returns(data) -> None:
    def trained(weight_average):
        cfg = TrainConfig(
            epochs=2,
            patience=2,
            negatives=64,
            weight_average=weight_average,
            progress=False,
            network=NetworkConfig(hidden=32, max_positions=64),
        )
        result = fit(data, cfg)
        return result.curves["val_ndcg@10"], result.net.state_dict()

    raw_curve, raw = trained(None)
    # a decay of 0 averages nothing: the very run without an average
    same_curve, same = trained(0.0)
    assert same_curve == raw_curve
    assert all(torch.equal(raw[k], same[k]) for k in raw)
    # a decay of 0.9 validates and returns other weights than the raw ones
    avg_curve, avg = trained(0.9)
    assert avg_curve != raw_curve
    assert not torch.equal(raw["item_id.weight"], avg["item_id.weight"])
