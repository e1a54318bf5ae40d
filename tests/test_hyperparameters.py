"""The checked-in table of RLlib keys agrees with the installed RLlib."""

from __future__ import annotations

from rlrunner.hyperparameters import ALGORITHMS, MANAGED, RENAMED, generate_table, load_table


def test_rllib_keys_table_matches_installed_rllib() -> None:
    assert generate_table() == load_table(), "regenerate with: python -m rlrunner.hyperparameters"


def test_rllib_keys_table_has_every_supported_algorithm_and_no_old_names() -> None:
    table = load_table()
    assert sorted(table["algorithms"]) == sorted(ALGORITHMS)
    for keys in table["algorithms"].values():
        assert not set(keys) & set(RENAMED)
        assert not set(keys) & set(MANAGED)
        assert {"lr", "gamma", "train_batch_size_per_learner", "minibatch_size"} <= set(keys)
