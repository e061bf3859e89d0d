import pytest

from panda_fm import PandaConfig


def test_defaults_are_the_reference_21m_configuration():
    cfg = PandaConfig()
    assert (cfg.d_model, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_patches) == (512, 8, 8, 32)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"num_rff": 200}, "must add up to d_model"),
        ({"num_attention_heads": 7}, "divisible by num_attention_heads"),
        ({"d_model": 24, "num_attention_heads": 8, "use_dynamics_embedding": False}, "must be even"),
        ({"num_rff": 255, "num_poly_feats": 120}, "num_rff counts sin and cos"),
        ({"patch_length": 1024}, "exceeds context_length"),
        ({"patch_stride": 32}, "would skip steps"),
        ({"pooling_type": "cls"}, "pooling_type must be one of"),
        ({"rope_percent": 1.5}, "rope_percent"),
        ({"context_length": 0}, "positive integer"),
        ({"num_hidden_layers": 2.5}, "positive integer"),
    ],
)
def test_invalid_configs_name_the_fix(overrides, message):
    with pytest.raises(ValueError, match=message):
        PandaConfig(**overrides)


def test_dynamics_embedding_error_suggests_the_width_that_fits():
    with pytest.raises(ValueError, match="change num_rff to 256"):
        PandaConfig(num_rff=250)


def test_round_trip_and_unknown_keys(tmp_path):
    cfg = PandaConfig(d_model=256, num_rff=0, num_poly_feats=120)
    assert PandaConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown PandaConfig keys \\['d_modle'\\]"):
        PandaConfig.from_dict({"d_modle": 3})


def test_analogue_option_is_validated():
    with pytest.raises(ValueError, match="multiple of patch_length"):
        PandaConfig(incontext="analogue", prediction_length=100)
    with pytest.raises(ValueError, match="incontext must be one of"):
        PandaConfig(incontext="nvar2")
    with pytest.raises(ValueError, match="analogue windows"):
        PandaConfig(incontext="analogue", analogue_delays=200, analogue_lag=3)
