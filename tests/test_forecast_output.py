"""What forecasts carry and how they are drawn (issue 28, item 7): an entry's ``info`` reaches ``forecast.info``
as in GluonTS's predictors; multivariate fan charts with :func:`vsmd_ts.timeseries.plots.plot_forecast`."""

import numpy as np
import pandas as pd
import pytest
from gluonts.dataset.common import ListDataset

from test_timeseries import START, D, H, signal, tiny


@pytest.fixture(scope="module")
def predictor():
    # info in the training data is carried along and left out of the batches
    train = [{"start": START, "target": signal(), "item_id": "train", "info": {"split": "train"}}]
    return tiny(ensemble_size=1).train(ListDataset(train, freq="h", one_dim_target=False))


def test_entry_info_and_item_id_reach_the_forecasts(predictor):
    entries = [{"start": START, "target": signal(), "item_id": "a", "info": {"source": "x", "k": 1}},
               {"start": START, "target": signal(seed=1)},  # neither field: None, as GluonTS gives
               {"start": START, "target": signal(seed=2), "info": {"source": "z"}}]
    for data in (entries, ListDataset(entries, freq="h", one_dim_target=False)):
        forecasts = list(predictor.predict(data))
        assert [f.info for f in forecasts] == [{"source": "x", "k": 1}, None, {"source": "z"}]
        assert [f.item_id for f in forecasts] == ["a", None, None]
