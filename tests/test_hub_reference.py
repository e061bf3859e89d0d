"""Loading checkpoints in the published reference format (docs/method.md)."""

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from panda_fm import PandaModel, PandaPipeline
from panda_fm.cli import main
from panda_fm.hub import _PANDA_ONLY_KEYS, reconstruct_poly_indices
from tests.conftest import REFERENCE_FIXTURE, tiny_config

TINY_REF = REFERENCE_FIXTURE / "tiny"


@pytest.fixture(scope="module")
def io() -> dict[str, torch.Tensor]:
    return load_file(REFERENCE_FIXTURE / "tiny_io.safetensors")


def _indices(io):
    return [io["reference_poly_indices_degree2"], io["reference_poly_indices_degree3"]]


def test_reproduces_the_reference_forward_pass_and_rollout(io):
    # the network and its rollout, as the reference computes them; PandaPipeline.predict standardises the context
    # in float64 first (without the model's variance floor), which moves channels of small variance a little
    pipe = PandaPipeline.from_pretrained(TINY_REF, poly_indices=_indices(io))
    with torch.no_grad():
        torch.testing.assert_close(pipe.model(io["context"]), io["forecast"], atol=1e-4, rtol=0)
        torch.testing.assert_close(pipe._rollout(io["context"], 320), io["rollout"], atol=1e-4, rtol=0)


def test_convert_save_load_gives_identical_outputs(io, tmp_path):
    save_file(
        {f"poly_indices_degree{d}": t for d, t in zip((2, 3), _indices(io), strict=True)},
        tmp_path / "idx.safetensors",
    )
    assert (
        main(
            [
                "convert",
                str(TINY_REF),
                str(tmp_path / "conv"),
                "--poly-indices",
                str(tmp_path / "idx.safetensors"),
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "conv" / "config.json").read_text())["model_type"] == "panda_fm"
    converted = PandaPipeline.from_pretrained(tmp_path / "conv")
    direct = PandaPipeline.from_pretrained(TINY_REF, poly_indices=_indices(io))
    assert torch.equal(converted.predict(io["context"], 320), direct.predict(io["context"], 320))
    with torch.no_grad():
        torch.testing.assert_close(converted.model(io["context"]), io["forecast"], atol=1e-4, rtol=0)


def test_missing_indices_are_reconstructed_from_the_training_seed(tmp_path, caplog):
    state_before = torch.random.get_rng_state()
    with caplog.at_level(logging.WARNING, logger="panda_fm.hub"):
        pipe = PandaPipeline.from_pretrained(TINY_REF)
    assert "reconstructing them from training seed 99" in caplog.text
    assert torch.equal(torch.random.get_rng_state(), state_before), "the caller's RNG state must be restored"
    torch.manual_seed(99)
    expected = [torch.randint(high=16, size=(8, 2)), torch.randint(high=16, size=(8, 3))]
    assert torch.equal(pipe.model.embedder.poly_indices_2, expected[0])
    assert torch.equal(pipe.model.embedder.poly_indices_3, expected[1])
    # a training_info.json beside the checkpoint names the seed
    shutil.copytree(TINY_REF, tmp_path / "ref")
    (tmp_path / "ref" / "training_info.json").write_text(json.dumps({"train_config": {"seed": 7}}))
    seeded = PandaPipeline.from_pretrained(tmp_path / "ref")
    assert torch.equal(seeded.model.embedder.poly_indices_2, reconstruct_poly_indices(pipe.config, 7)[0])
    # the reconstruction is stored by a conversion
    seeded.save_pretrained(tmp_path / "conv")
    assert torch.equal(
        PandaPipeline.from_pretrained(tmp_path / "conv").model.embedder.poly_indices_3,
        seeded.model.embedder.poly_indices_3,
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("use_cls_token", True),
        ("pre_norm", False),
        ("norm_type", "layernorm"),
        ("channel_rope", True),
        ("distribution_output", "student_t"),
        ("pooling_type", "cls"),
        ("mode", "pretrain"),
    ],
)
def test_unsupported_reference_configs_are_refused_by_key(tmp_path, key, value):
    shutil.copytree(TINY_REF, tmp_path / "ref")
    config = json.loads((tmp_path / "ref" / "config.json").read_text())
    config[key] = value
    (tmp_path / "ref" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=key):
        PandaPipeline.from_pretrained(tmp_path / "ref")


# --- the mapping for other reference configurations -------------------------------------------------


def write_reference_checkpoint(model: PandaModel, directory: Path) -> None:
    """Write ``model`` in the reference's layout: PatchTST config keys and reference tensor names."""
    cfg = model.config
    directory.mkdir(parents=True)
    reference = json.loads((TINY_REF / "config.json").read_text())
    reference.update({k: v for k, v in cfg.hyperparameters().items() if k not in _PANDA_ONLY_KEYS})
    (directory / "config.json").write_text(json.dumps(reference))
    state = {}
    for key, value in model.state_dict().items():
        if "poly_indices" in key:
            continue
        state["head.projection.weight" if key == "head.weight" else f"model.encoder.{key}"] = value
    save_file(state, directory / "model.safetensors")


@pytest.mark.parametrize(
    "overrides",
    [
        dict(
            num_hidden_layers=3, num_attention_heads=2, d_model=40, ffn_dim=24, num_poly_feats=6, num_rff=12
        ),
        dict(
            patch_length=8, patch_stride=4, context_length=200, prediction_length=24, d_model=48, num_rff=24
        ),
        dict(pooling_type="max", rope_percent=0.5, max_wavelength=100.0),
        dict(poly_degrees=3, num_poly_feats=4, num_rff=20, d_model=48),
        dict(use_dynamics_embedding=False, d_model=32, num_attention_heads=4),
        dict(channel_attention=False, bias=False),
    ],
)
def test_mapping_holds_for_other_configurations(tmp_path, overrides):
    model = PandaModel(tiny_config(**overrides), seed=11).eval()
    write_reference_checkpoint(model, tmp_path / "ref")
    indices = model.embedder.poly_indices() if model.config.use_dynamics_embedding else None
    loaded = PandaPipeline.from_pretrained(tmp_path / "ref", poly_indices=indices)
    assert loaded.config == model.config
    x = torch.randn(2, model.config.context_length + 30, 3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model(x))


def test_poly_indices_of_the_wrong_shape_are_refused(io):
    with pytest.raises(ValueError, match="degree 3 must be \\(8, 3\\)"):
        PandaPipeline.from_pretrained(TINY_REF, poly_indices=[io["reference_poly_indices_degree2"]] * 2)
