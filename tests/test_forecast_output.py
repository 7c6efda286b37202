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


def _lines(ax):
    return {line.get_label(): line for line in ax.get_lines()}


def test_plot_forecast_draws_one_panel_per_series_with_bands_and_history(predictor):
    import matplotlib.pyplot as plt
    from gluonts.evaluation import make_evaluation_predictions

    from vsmd_ts.timeseries.plots import plot_forecast

    test = ListDataset([{"start": START, "target": signal(), "item_id": "w"}], freq="h", one_dim_target=False)
    forecasts, tss = make_evaluation_predictions(test, predictor, num_samples=50)
    (forecast,), (truth,) = list(forecasts), list(tss)
    fig = plot_forecast(forecast, truth, names=["a", "b", "c"])
    axes = fig.get_axes()
    assert len(axes) == D and [ax.get_ylabel() for ax in axes] == ["a", "b", "c"]
    when = forecast.index.to_timestamp()
    for d, ax in enumerate(axes):
        lines = _lines(ax)
        np.testing.assert_array_equal(lines["median"].get_xdata(), when)
        np.testing.assert_allclose(lines["median"].get_ydata(), np.quantile(forecast.samples[:, :, d], 0.5, axis=0))
        observed = lines["observed"]  # the last 3 H steps before the forecast and the truth over the horizon
        assert len(observed.get_xdata()) == 4 * H
        np.testing.assert_allclose(observed.get_ydata(), truth.to_numpy()[-4 * H:, d])
        assert len(ax.collections) == 2  # the 50 % and 90 % bands
    assert "w" in axes[0].get_title()
    plt.close(fig)

    # an entry's target (D, T) as history, chosen series, into the caller's axes
    fig, given = plt.subplots(1, 2)
    assert plot_forecast(forecast, signal()[:, :-H], dims=[2, 0], ax=given, history_length=5) is fig
    observed = _lines(given[0])["observed"]
    np.testing.assert_allclose(observed.get_ydata(), signal()[2, -H - 5:-H])
    assert observed.get_xdata()[-1] == (forecast.start_date - 1).to_timestamp()
    assert given[1].get_ylabel() == "series 0"
    plt.close(fig)
    with pytest.raises(ValueError, match="dims"):
        plot_forecast(forecast, dims=[D])


def test_plot_fan_chart_draws_with_the_same_fan(predictor, tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from vsmd_ts.timeseries import plots

    test = ListDataset([{"start": START, "target": signal()}], freq="h", one_dim_target=False)
    (forecast,) = predictor.predict(test)
    truth = pd.DataFrame(signal().T, index=pd.period_range(START, periods=signal().shape[1], freq="h"))
    drawn, draw = [], plots._draw_fan
    monkeypatch.setattr(plots, "_draw_fan", lambda ax, x, q, *args, **kw: drawn.append(q) or draw(ax, x, q, *args, **kw))
    path = plots.plot_fan_chart(forecast, truth, tmp_path / "fan.png", dims=[0, 2])
    assert path.stat().st_size > 10_000 and len(drawn) == 2
    np.testing.assert_allclose(drawn[1][2], np.quantile(forecast.samples[:, :, 2], 0.5, axis=0))
    plt.close("all")


def test_gluonts_copy_dim_plot_works_on_our_forecasts_and_a_univariate_one_plots_too(predictor):
    import matplotlib.pyplot as plt

    from vsmd_ts.timeseries.plots import plot_forecast

    (forecast,) = predictor.predict(ListDataset([{"start": START, "target": signal()}], freq="h",
                                                one_dim_target=False))
    fig, ax = plt.subplots()
    forecast.copy_dim(1).plot(ax=ax, name="series 1")  # GluonTS's own plot, one series at a time
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), np.quantile(forecast.samples[:, :, 1], 0.5, axis=0))
    plt.close(fig)
    fig = plot_forecast(forecast.copy_dim(1))  # samples (S, H)
    assert len(fig.get_axes()) == 1
    plt.close(fig)
