import jax.numpy as jnp
import pytest

import zoo


def test_hidden_size_not_divisible_by_heads_names_both_numbers():
    with pytest.raises(ValueError, match="hidden_size=100 is not divisible by num_heads=12"):
        zoo.Config(hidden_size=100, num_heads=12)


@pytest.mark.parametrize("field, value", [("position_embedding", "alibi"), ("norm_position", "middle"),
                                          ("attention", "linear"), ("activation", "tanh"), ("pooling", "sum"),
                                          ("remat", "some")])
def test_unknown_switch_value_lists_the_choices(field, value):
    with pytest.raises(ValueError, match=rf"{field}='{value}' is not one of"):
        zoo.Config(**{field: value})


def test_rates_sizes_and_dtypes_are_checked():
    with pytest.raises(ValueError, match="dropout_rate must be in"):
        zoo.Config(dropout_rate=1.5)
    with pytest.raises(ValueError, match="num_layers must be positive, got 0"):
        zoo.Config(num_layers=0)
    with pytest.raises(ValueError, match="sinusoidal positions need an even hidden_size"):
        zoo.Config(hidden_size=63, num_heads=7, position_embedding="sinusoidal")
    with pytest.raises(ValueError, match="is not a dtype"):
        zoo.Config(dtype="float33")
    with pytest.raises(ValueError, match="pad_token_id=50 is outside the vocabulary of 10"):
        zoo.Config(vocab_size=10, pad_token_id=50)


def test_dtype_names_become_dtypes_and_embedding_size_defaults_to_hidden():
    cfg = zoo.Config(dtype="bfloat16", hidden_size=64, num_heads=4)
    assert cfg.dtype == jnp.bfloat16 and cfg.param_dtype == jnp.float32
    assert cfg.embedding_size is None and cfg.embedding_dim == 64 and cfg.head_dim == 16
    assert cfg.replace(hidden_size=128).embedding_dim == 128


def test_replace_rejects_unknown_fields_and_rechecks():
    cfg = zoo.get_config("bert-tiny")
    with pytest.raises(ValueError, match=r"unknown config field\(s\) \['hidden'\]"):
        cfg.replace(hidden=3)
    with pytest.raises(ValueError, match="not divisible"):
        cfg.replace(num_heads=5)
