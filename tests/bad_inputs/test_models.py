"""Bad model names: each case is refused before any weights load, with an error naming the path and the fix,
by ``model.loading`` and by ``dialoguellm train`` (exit 2), and the run folder keeps every earlier result."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dialoguellm import cli
from dialoguellm.model import loading

# Settings that make `dialoguellm train` reach the model quickly on the finished run's curated MELD data.
TINY = ["data.datasets=[meld]", "model.dtype=fp32", "model.num_threads=1"]


def write_gguf(path, architecture: str):
    """A GGUF file with a real header declaring ``architecture`` and one small tensor."""
    import gguf

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_name(f"tiny-{architecture}")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _missing_folder(tmp_path):
    return str(tmp_path / "models" / "llama-2-7b")


def _missing_relative_folder(tmp_path):
    return "./no-such-folder/llama-2-7b"


def _missing_gguf(tmp_path):
    return str(tmp_path / "SmolLM2.Q4_1.gguf")


def _data_folder(tmp_path):
    folder = tmp_path / "meld"
    folder.mkdir()
    (folder / "train_sent_emo.csv").write_text("Utterance,Emotion\nHi.,neutral\n")
    return str(folder)


def _adapter_folder(tmp_path):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "org/base-model"}))
    (folder / "adapter_model.safetensors").write_bytes(b"")
    return str(folder)


def _weights_file(tmp_path):
    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(b"\x80\x04not a model")
    return str(path)


def _not_gguf(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_text("<html>404 Not Found</html>")
    return str(path)


def _bert_gguf(tmp_path):
    return str(write_gguf(tmp_path / "bert.gguf", "bert"))


def _mamba_gguf(tmp_path):
    return str(write_gguf(tmp_path / "mamba.gguf", "mamba"))


CASES = [
    (
        "missing folder",
        _missing_folder,
        FileNotFoundError,
        r"Model folder not found: .*llama-2-7b\. Check model\.name",
    ),
    (
        "missing relative folder",
        _missing_relative_folder,
        FileNotFoundError,
        r"not found: .*no-such-folder.*org/name",
    ),
    (
        "missing GGUF file",
        _missing_gguf,
        FileNotFoundError,
        r"GGUF model file not found: .*Q4_1\.gguf; check model",
    ),
    (
        "a data folder",
        _data_folder,
        FileNotFoundError,
        r"meld has no config\.json; pass a folder written by save_pre",
    ),
    (
        "a LoRA adapter folder",
        _adapter_folder,
        FileNotFoundError,
        r"adapter holds a LoRA adapter, not a model: set model\.name to its base model \(org/base-model\)",
    ),
    (
        "a weights file",
        _weights_file,
        FileNotFoundError,
        r"pytorch_model\.bin is a file but not a \.gguf; pass a model",
    ),
    ("a .gguf that is not GGUF", _not_gguf, ValueError, r"model\.gguf is not a readable GGUF file \(.*magic"),
    (
        "a GGUF of BERT",
        _bert_gguf,
        ValueError,
        r"bert\.gguf: GGUF architecture 'bert' is not supported \(an architecture transformers cannot load from "
        r"GGUF\)\. Use a GGUF of a decoder-only transformer \(.*llama",
    ),
    (
        "a GGUF of Mamba",
        _mamba_gguf,
        ValueError,
        r"mamba\.gguf: GGUF architecture 'mamba' is not supported \(a state-space model with no attention",
    ),
]


def _refused_by_cli(overrides: list[str], run, capsys) -> str:
    sets = [arg for pair in [*TINY, *overrides] for arg in ("--set", pair)]
    argv = ["train", "--config", "cpu", *sets, "--run-dir", str(run), "--name", "training_new"]
    assert cli.main(argv) == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("case, make, error, message", CASES, ids=[c[0] for c in CASES])
def test_bad_model_name_is_refused_naming_the_path_and_fix(
    tmp_path, finished_run, written, capsys, case, make, error, message
):
    name = make(tmp_path)
    with pytest.raises(error, match=message) as err:
        loading.resolve_model_path(name)
    assert str(err.value) in _refused_by_cli([f"model.name={name}"], finished_run, capsys)
    # The refused training run may have begun its own folder; nothing that existed before changed.
    written.assert_unchanged(new_files_allowed_under="training_new")
    assert not (finished_run / "training_new" / "checkpoint").exists()


def test_a_supported_gguf_architecture_passes_the_check(tmp_path):
    path = write_gguf(tmp_path / "llama.gguf", "llama")
    assert loading.check_gguf(path) == "llama"
    assert loading.resolve_model_path(str(path)) == (str(tmp_path), "llama.gguf")


@pytest.mark.parametrize("bits", ["4bit", "8bit"])
def test_kbit_without_a_backend_explains_the_alternative(
    tiny_model_dir, finished_run, written, capsys, bits, monkeypatch
):
    # bitsandbytes >= 0.48 quantises on CPU (tests/training/test_paper_profile.py runs it); an older build cannot.
    monkeypatch.setattr(loading, "kbit_backend_problem", lambda q: "bitsandbytes 0.43 has no CPU backend")
    message = (
        rf"quantization={bits} cannot load here: bitsandbytes 0\.43 has no CPU backend\. Install bitsandbytes "
        r">= 0\.48 .* or use `--set model\.quantization=none`"
    )
    with pytest.raises(RuntimeError, match=message) as err:
        loading.load_model(tiny_model_dir, quantization=bits)
    overrides = [f"model.name={tiny_model_dir}", f"model.quantization={bits}"]
    assert str(err.value) in _refused_by_cli(overrides, finished_run, capsys)
    written.assert_unchanged(new_files_allowed_under="training_new")
