"""The training clock behind training.max_minutes and the history's minutes column."""

from __future__ import annotations

import time

import keras

from kerasseg.training.callbacks import ElapsedMinutes, TimeBudget


def _model():
    inputs = keras.Input((2,))
    return keras.Model(inputs, keras.layers.Dense(1)(inputs))


def test_minutes_accumulate_over_phases_and_resumes():
    clock = ElapsedMinutes(already_spent_minutes=2.0)
    clock.set_model(_model())
    for _ in range(2):  # two phases: two fit calls
        clock.on_train_begin()
        time.sleep(0.06)
        logs = {}
        clock.on_epoch_end(0, logs)
        clock.on_train_end()
    assert 2.0 + 0.1 / 60 < logs["minutes"] < 2.0 + 5.0 / 60


def test_time_budget_stops_after_the_epoch_that_crosses_it():
    model = _model()
    budget = TimeBudget(0.05 / 60, already_spent_seconds=0.0)
    budget.set_model(model)
    model.stop_training = False
    budget.on_train_begin()
    budget.on_epoch_end(0)
    assert not budget.exhausted and not model.stop_training
    time.sleep(0.08)
    budget.on_epoch_end(1)
    assert budget.exhausted and model.stop_training
    spent = TimeBudget(1.0, already_spent_seconds=61.0)
    spent.set_model(model)
    spent.on_train_begin()
    spent.on_epoch_end(0)
    assert spent.exhausted  # a resumed run counts the minutes of its earlier invocations
