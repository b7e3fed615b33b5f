import pytest

from seal_lm.errors import SealError
from seal_lm.models import ModelSettings, load_model, resolve_source


def test_local_directory_loads_frozen_on_cpu(tiny_model_dir):
    loaded = load_model(ModelSettings(name=str(tiny_model_dir), device="cpu"))
    assert loaded.device.type == "cpu" and loaded.has_chat_template
    assert not any(p.requires_grad for p in loaded.model.parameters())
    assert loaded.tokenizer.pad_token is not None


@pytest.mark.parametrize("name", ["/no/such/model", "./missing-dir", "missing.gguf", "a/b/c"])
def test_missing_model_is_one_line_naming_the_path(name):
    with pytest.raises(SealError) as info:
        load_model(name)
    assert name in str(info.value) and "\n" not in str(info.value)


def test_corrupt_gguf_is_one_line_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SEAL_CACHE_DIR", str(tmp_path / "cache"))
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00 this is not a model")
    with pytest.raises(SealError) as info:
        load_model(str(bad))
    assert str(bad) in str(info.value) and "\n" not in str(info.value)
    assert not list((tmp_path / "cache").rglob("config.json"))  # nothing half-written is cached


def test_directory_without_config_and_corrupt_weights(tmp_path, tiny_model_dir):
    with pytest.raises(SealError, match="has no config.json"):
        resolve_source(str(tmp_path))
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in tiny_model_dir.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(SealError) as info:
        load_model(str(broken))
    assert str(broken) in str(info.value) and "\n" not in str(info.value)


def test_unknown_dtype(tiny_model_dir):
    with pytest.raises(SealError, match="unknown dtype"):
        load_model(ModelSettings(name=str(tiny_model_dir), dtype="float8"))
