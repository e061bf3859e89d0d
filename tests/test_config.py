import json
from pathlib import Path

import pytest
import transformers

from panda_fm import PandaConfig
from panda_fm.config import EXPERT_NAMES
from panda_fm.training.config import load_config, override_keys, save_config


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


def test_unknown_keys_are_refused_however_the_config_is_built(tmp_path):
    with pytest.raises(ValueError, match=r"unknown PandaConfig keys \['d_modle', 'vocab_size'\]"):
        PandaConfig(d_modle=3, vocab_size=10)
    config = PandaConfig().to_dict() | {"dmodel": 64}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ValueError, match=r"unknown PandaConfig keys \['dmodel'\]; known keys are \[.*'d_model'"
    ):
        transformers.AutoConfig.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="model_type is 'llama'"):
        PandaConfig(model_type="llama")


def test_keys_transformers_writes_are_accepted_and_are_not_hyperparameters(tmp_path):
    cfg = PandaConfig(d_model=256, num_rff=0, num_poly_feats=120)
    cfg.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "panda_fm" and "transformers_version" in saved
    loaded = transformers.AutoConfig.from_pretrained(tmp_path)
    assert type(loaded) is PandaConfig and loaded == cfg
    assert loaded.transformers_version is not None and cfg.transformers_version is None  # bookkeeping differs
    extra = {
        "architectures": ["PandaModel"],
        "dtype": "float32",
        "torch_dtype": "float32",
        "panda_fm_version": "0",
    }
    assert PandaConfig(**cfg.hyperparameters(), **extra) == cfg
    assert list(cfg.hyperparameters()) == list(PandaConfig.field_types())
    assert {"dtype", "id2label", "return_dict", "transformers_version"} & set(cfg.hyperparameters()) == set()
    assert cfg != PandaConfig()


def test_the_shipped_config_loads_unchanged():
    path = Path(__file__).resolve().parents[1] / "checkpoints" / "panda-fm-small"
    raw = json.loads((path / "config.json").read_text())
    cfg = PandaConfig.from_dict(raw)
    assert cfg.experts_version == 7 and cfg.incontext == "experts" and cfg.experts[-1] == "smap"
    # a config from before experts_version existed (five experts) reads as version 1
    trained = {k: v for k, v in raw.items() if k != "experts_version"} | {"experts": raw["experts"][:5]}
    assert PandaConfig.from_dict(trained).experts_version == 1
    fields = set(PandaConfig.field_types())
    assert {k: v for k, v in cfg.hyperparameters().items() if k in raw} == {
        k: v for k, v in raw.items() if k in fields
    }
    # anything else is transformers' bookkeeping, as save_pretrained writes it
    assert set(raw) - fields <= {"model_type", "architectures", "dtype", "transformers_version"}
    assert transformers.AutoConfig.from_pretrained(path) == cfg


def test_experts_version_is_validated():
    with pytest.raises(ValueError, match=r"experts_version must be one of \[1, 2, 3, 4, 5, 6, 7\]"):
        PandaConfig(incontext="experts", experts_version=8)
    with pytest.raises(ValueError, match="experts_version"):
        PandaConfig(experts_version=True)


def test_the_default_experts_are_the_five_of_versions_1_to_3_and_version_4_adds_one_by_name():
    assert EXPERT_NAMES == ("nvar", "nvar_g1", "nvar_sg11", "analogue", "analogue_g2")
    for version in (1, 3, 4):  # a config that names no experts reads as before with any version
        assert PandaConfig(incontext="experts", experts_version=version).experts == list(EXPERT_NAMES)
    cfg = PandaConfig(incontext="experts", experts_version=4, experts=[*EXPERT_NAMES, "analogue_auto"])
    assert cfg.experts[-1] == "analogue_auto"
    with pytest.raises(ValueError, match="experts must be distinct names"):
        PandaConfig(incontext="experts", experts_version=3, experts=["nvar", "analogue_auto"])


def test_run_configs_list_and_write_only_our_fields(tmp_path):
    keys = override_keys()
    assert "model.experts_version" in keys and "model.d_model" in keys
    assert not {"model.dtype", "model.id2label", "model.return_dict"} & set(keys)
    with pytest.raises(ValueError, match=r"unknown config key 'model.dtype'"):
        load_config(None, {"model.dtype": "float32"})
    cfg = load_config(None, {"model.d_model": "256", "model.num_rff": "0", "model.num_poly_feats": "120"})
    assert set(cfg.to_dict()["model"]) == set(PandaConfig.field_types())
    save_config(cfg, tmp_path / "run.yaml")
    assert load_config(tmp_path / "run.yaml") == cfg
