"""The A schedule's run length equals the optimiser steps Lightning actually takes."""

import pytest

from test_timeseries import dataset, signal, tiny, H


@pytest.mark.parametrize("extra", [{}, {"accumulate_grad_batches": 2}, {"limit_train_batches": 2},
                                   {"limit_train_batches": 3, "accumulate_grad_batches": 2}])
def test_total_steps_matches_the_steps_taken(extra):
    est = tiny(num_batches_per_epoch=4, trainer_kwargs=dict(max_epochs=2, enable_progress_bar=False, **extra))
    out = est.train_model(dataset(signal()[:, :-H]))
    assert out.trained_net._total_steps() == out.trainer.global_step > 0

