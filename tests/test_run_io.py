"""Run files: only what was trained is stored, and loading onto a fresh backbone reproduces the
predictions exactly; LoRA exports to peft's adapter format and loads back through peft."""
from __future__ import annotations

import torch
import pytest
from safetensors.torch import load_file

from musicpetl.backbones import build_backbone
from musicpetl.model import PetlModel
from musicpetl.petl import apply_method, prepare_for_inference
from musicpetl.run_io import export_peft_adapter, load_run, read_config, save_run

torch.set_num_threads(1)
PAPER = ("finetune", "probing", "adapter", "prompt", "prefix", "bitfit", "ssf", "lora")


def trained_model(name: str, method: str, seed: int = 0) -> PetlModel:
    backbone = build_backbone(name, 2, seed=seed)
    apply_method(backbone, method, {})
    model = PetlModel(backbone, 5, 2, method=method)
    with torch.no_grad():  # stand-in for training: move every trainable tensor off its init
        g = torch.Generator().manual_seed(1)
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


@pytest.mark.parametrize("backbone", ["mert-tiny", "musicfm-tiny"])
@pytest.mark.parametrize("method", PAPER)
def test_round_trip_reproduces_predictions(tmp_path, backbone, method):
    model = trained_model(backbone, method)
    wave = torch.randn(2, 24000, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = model(wave)
    path = tmp_path / "run.safetensors"
    save_run(path, model, method, {}, backbone, 2, task_info={"task": "genre", "seed": 0, "checkpoint": ""})
    stored = load_file(str(path))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    if method == "finetune":
        assert set(stored) == set(model.state_dict())
    else:  # nothing frozen is stored
        assert set(stored) == trainable | {n for n in model.state_dict() if n.startswith("head.")}
    loaded = load_run(path)
    assert read_config(path)["method"] == method and loaded.method == method
    with torch.no_grad():
        assert torch.equal(loaded(wave), expected)
        # the merged model (what evaluation uses) agrees too
        loaded.backbone = prepare_for_inference(loaded.backbone, method)
        assert torch.allclose(loaded(wave), expected, atol=1e-5)


def test_run_rejects_a_foreign_file(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(ValueError, match="not a musicpetl run"):
        load_run(tmp_path / "x.safetensors")


def test_lora_exports_to_peft_and_loads_back(tmp_path):
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict

    model = trained_model("musicfm-tiny", "lora")
    save_run(tmp_path / "run.safetensors", model, "lora", {}, "musicfm-tiny", 2,
             task_info={"task": "genre", "seed": 0, "checkpoint": ""})
    out = export_peft_adapter(tmp_path / "run.safetensors", tmp_path / "peft")
    assert (out / "adapter_config.json").exists() and (out / "adapter_model.safetensors").exists()
    fresh = build_backbone("musicfm-tiny", 2, seed=0).eval()
    inject_adapter_in_model(LoraConfig.from_pretrained(str(out)), fresh)
    res = set_peft_model_state_dict(fresh, load_file(str(out / "adapter_model.safetensors")))
    assert not res.unexpected_keys
    wave = torch.randn(1, 24000)
    with torch.no_grad():
        assert torch.allclose(fresh(wave)[-1], model.backbone(wave)[-1], atol=1e-6)


def test_export_refuses_other_methods(tmp_path):
    model = trained_model("mert-tiny", "adapter")
    save_run(tmp_path / "run.safetensors", model, "adapter", {}, "mert-tiny", 2,
             task_info={"task": "genre", "seed": 0, "checkpoint": ""})
    with pytest.raises(ValueError, match="only lora and dora"):
        export_peft_adapter(tmp_path / "run.safetensors", tmp_path / "peft")

