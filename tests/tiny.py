"""Test helpers: a tiny random LLaMA with an offline word-level tokenizer, and synthetic dialogues.

The tiny model is built in the test session from ``LlamaConfig`` (no download), with a tokenizer trained on
the fly over the words our prompts use, a ChatML chat template, and saved to a folder so that notebooks can
take it as their MODEL path (``tiny_model_dir``).
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import torch

from dialoguellm.labels import LABELS, NORMALISATION

# One thread: the tiny model gains nothing from two, and on a machine shared with other jobs two OpenMP
# threads that wait on each other run up to 50x slower.
torch.set_num_threads(1)

SPECIAL = ["<unk>", "<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPEAKERS = ["Ross", "Rachel", "Monica", "Joey"]
# One cue word per MELD label: the synthetic utterance names it, so a model can learn the mapping.
CUES = {
    "neutral": "okay",
    "joy": "wonderful",
    "surprise": "whoa",
    "anger": "furious",
    "sadness": "crying",
    "disgust": "gross",
    "fear": "scared",
}
FILLER = ["I", "think", "that", "is", "so", "really", "the", "coffee", "apartment", "today", "you", "we"]


def synthetic_rows(split: str, n_dialogues: int, turns: int, seed: int, dataset: str = "meld") -> list[dict]:
    """Rows in the curated schema (dataset, split, dialogue_id, turn, ...) with cue words per label."""
    rng = random.Random(seed)
    labels = LABELS[dataset]
    rows = []
    for d in range(n_dialogues):
        for t in range(turns):
            label_id = rng.randrange(len(labels))
            cue = CUES.get(labels[label_id], labels[label_id].lower())
            words = rng.sample(FILLER, 3) + [cue]
            rng.shuffle(words)
            rows.append(
                {
                    "dataset": dataset,
                    "split": split,
                    "dialogue_id": f"{split}{d}",
                    "turn": t,
                    "utterance_id": f"{split}{d}_{t}",
                    "speaker": SPEAKERS[(d + t) % len(SPEAKERS)],
                    "text": " ".join(words) + ".",
                    "label": labels[label_id],
                    "label_id": label_id,
                    "clip_id": f"dia{d}_utt{t}" if dataset == "meld" else None,
                    "start": None,
                    "end": None,
                }
            )
    return rows


def synthetic_corpus(dataset: str = "meld", sizes=(4, 2, 2), turns: int = 4, seed: int = 0) -> dict:
    """``{"train": rows, "dev": rows, "test": rows}`` of synthetic dialogues."""
    return {
        split: synthetic_rows(split, n, turns, seed + i, dataset)
        for i, (split, n) in enumerate(zip(("train", "dev", "test"), sizes, strict=True))
    }


def _vocabulary_texts() -> list[str]:
    from dialoguellm.prompts import load_template

    texts = list(load_template("paper").values())
    texts += [" ".join(v.values()) + " " + " ".join(v) for v in NORMALISATION.values()]
    texts += [
        ". , : ' [ ] ( ) ! ?",
        " ".join(SPEAKERS + FILLER + list(CUES.values())),
        "system user assistant Response Instruction",
    ]
    return texts


def build_tiny_tokenizer(chat: bool = True):
    """A word-level fast tokenizer over the prompts' vocabulary, optionally with a ChatML chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(
        _vocabulary_texts(), trainers.WordLevelTrainer(special_tokens=SPECIAL, min_frequency=1)
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="<|im_end|>"
    )
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(vocab_size: int, seed: int = 0):
    """A 2-layer random LLaMA (hidden 32), SDPA attention, fp32."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        # Wide enough weights that a frozen random head can express confident answers (std 0.02 caps every
        # logit near 1 in 64 dimensions, and nothing can be learnt through LoRA).
        initializer_range=0.2,
        pad_token_id=1,
        bos_token_id=2,
        eos_token_id=5,
    )
    config._attn_implementation = "sdpa"
    return LlamaForCausalLM(config)


ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def tiny_settings(model_dir: str, dropout: float = 0.0, **train) -> dict:
    """Run settings (what a YAML profile holds) that train the tiny LLaMA on synthetic MELD rows in a second:
    fp32, one thread, LoRA on every linear layer, zero-shot prompts without context; ``train`` overrides
    the train section (e.g. ``epochs=2, save_every=1``)."""
    t = {
        "lr": 1e-2,
        "epochs": 40,
        "batch_size": 4,
        "micro_batch_size": 4,
        "grad_accum": 1,
        "weight_decay": 0.0,
        "warmup_steps": 0,
        "eval_every": 0,
        "seed": 0,
    }
    t.update(train)
    return {
        "model": {"name": model_dir, "dtype": "fp32", "num_threads": 1},
        "lora": {"r": 8, "alpha": 16, "dropout": dropout, "target_modules": ALL_LINEAR},
        "prompt": {"k_shot": 0, "context_turns": 0, "use_video": False},
        "data": {"datasets": ["meld"]},
        "train": t,
        "eval": {"batch_size": 8},
    }


def save_synthetic_corpus(run_dir, corpus: dict) -> None:
    """Write ``synthetic_corpus`` rows into ``run_dir/data`` as notebook 01 would (curated parquet files)."""
    from datasets import Dataset, DatasetDict

    from dialoguellm.corpora import readers

    splits = {
        split: Dataset.from_list(rows, features=readers.RECORD_FEATURES) for split, rows in corpus.items()
    }
    readers.save_curated(DatasetDict(splits), run_dir)


REPO_DIR = Path(__file__).resolve().parents[1]


def save_random_adapter(model_dir: str, folder: Path) -> Path:
    """A LoRA adapter (r 4 on every linear layer) for the tiny model at ``model_dir``, saved to ``folder``: B
    drawn at random (seed 1), so switching the adapter on or off changes the scores."""
    from dialoguellm.model import loading

    model = loading.add_lora(loading.load_model(model_dir, dtype="fp32").model, 4, 8, 0.0, ALL_LINEAR)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    model.save_pretrained(str(folder), safe_serialization=True)
    return Path(folder)


def shared_dir() -> Path | None:
    """The read-only ``../shared`` beside a development checkout, when present (tests that need it skip
    without it; the package itself never reads it)."""
    candidate = REPO_DIR.parent / "shared"
    return candidate if candidate.is_dir() else None


def shared_seceu_dir() -> Path | None:
    """The SECEU files in ``../shared/data/seceu`` (research use only, never in the repository), if present."""
    shared = shared_dir()
    folder = shared / "data" / "seceu" if shared is not None else None
    return folder if folder is not None and (folder / "seceu_items.json").is_file() else None


def build_sentencepiece_llama(folder: Path, vocab_size: int = 600) -> Path:
    """A tiny random LLaMA-2-shaped model folder with a SentencePiece tokenizer trained here from corpus text.

    The tokenizer is LLaMA 2's kind: BPE pieces with a leading-space marker, byte fallback (a newline is
    ``<0x0A>``), ``<unk>``/``<s>``/``</s>`` at 0/1/2, no pad token and no chat template; transformers
    converts ``tokenizer.model`` as it does Llama-2-7b-hf's, and the folder keeps the converted
    ``tokenizer.json`` so that later loads skip the conversion.
    """
    import csv
    import io
    import json

    import sentencepiece as spm
    from transformers import AutoTokenizer

    from dialoguellm.corpora.readers import vendored_dir

    folder.mkdir(parents=True, exist_ok=True)
    with (vendored_dir() / "meld" / "train_sent_emo.csv").open(encoding="utf-8", newline="") as handle:
        texts = [row["Utterance"] for _, row in zip(range(1500), csv.DictReader(handle), strict=False)]
    texts += _vocabulary_texts()
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    (folder / "tokenizer.model").write_bytes(model.getvalue())
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.save_pretrained(folder)
    tiny = build_tiny_model(len(tokenizer))
    tiny.config.pad_token_id, tiny.config.bos_token_id, tiny.config.eos_token_id = None, 1, 2
    tiny.generation_config.pad_token_id = None
    tiny.generation_config.bos_token_id, tiny.generation_config.eos_token_id = 1, 2
    tiny.save_pretrained(folder, safe_serialization=True)
    return folder


class LocalServer:
    """An HTTP server on 127.0.0.1 (a free port) serving ``handler`` in a thread, as a context manager;
    ``url`` is its OpenAI-style base URL. Subclasses build their handler and call ``_serve``."""

    def _serve(self, handler: type) -> None:
        import threading
        from http.server import ThreadingHTTPServer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _permute_for_rope(weight, heads: int):
    """llama.cpp's reordering of a query/key projection's rows (``convert_hf_to_gguf.LlamaModel.permute``);
    transformers undoes it when it loads a LLaMA GGUF."""
    rows = weight.shape[0]
    return (
        weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)
    )


def write_llama_gguf(folder: Path, path: Path) -> Path:
    """Write the LLaMA model folder ``folder`` (``build_sentencepiece_llama``'s) as an F32 GGUF file, as
    llama.cpp's converter does: hyperparameters under ``llama.*``, the SentencePiece vocabulary with its
    merges and token types under ``tokenizer.ggml.*``, tensors under llama.cpp's names with the query and
    key rows permuted. transformers reads it back to the same weights and the same tokenizer."""
    import json

    import gguf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    cfg = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(folder.name)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    writer.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    bpe = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = bpe["model"]["vocab"]
    tokens = sorted(vocab, key=vocab.get)
    special = {t["content"] for t in bpe["added_tokens"]}
    kinds = gguf.TokenType
    types = [
        kinds.UNKNOWN if t == tokenizer.unk_token else kinds.CONTROL if t in special else
        kinds.BYTE if t.startswith("<0x") else kinds.NORMAL
        for t in tokens
    ]  # fmt: skip
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([-float(i) for i in range(len(tokens))])
    writer.add_token_types(types)
    writer.add_token_merges([" ".join(pair) for pair in bpe["model"]["merges"]])
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_unk_token_id(tokenizer.unk_token_id)
    # The folder's tokenizer decides whether a plain prompt starts with BOS; the GGUF says the same.
    writer.add_add_bos_token(tokenizer("a")["input_ids"][:1] == [tokenizer.bos_token_id])
    writer.add_add_eos_token(False)
    weights = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
    writer.add_tensor("token_embd.weight", weights["model.embed_tokens.weight"])
    writer.add_tensor("output_norm.weight", weights["model.norm.weight"])
    writer.add_tensor("output.weight", weights["lm_head.weight"])
    names = {
        "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm", "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj",
    }  # fmt: skip
    for i in range(cfg.num_hidden_layers):
        layer = f"model.layers.{i}."
        for ours, theirs in names.items():
            writer.add_tensor(f"blk.{i}.{ours}.weight", weights[f"{layer}{theirs}.weight"])
        q, k = weights[f"{layer}self_attn.q_proj.weight"], weights[f"{layer}self_attn.k_proj.weight"]
        writer.add_tensor(f"blk.{i}.attn_q.weight", _permute_for_rope(q, heads))
        writer.add_tensor(f"blk.{i}.attn_k.weight", _permute_for_rope(k, kv_heads))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


HUB_COMMIT = "0123456789abcdef0123456789abcdef01234567"


class HubServer(LocalServer):
    """The Hugging Face hub's download API on 127.0.0.1, serving model folders (``repos``: repo id -> folder)
    at one commit: ``HEAD``/``GET /{repo}/resolve/{revision}/{file}`` with the ``X-Repo-Commit``, ``ETag``
    and ``Content-Length`` headers huggingface_hub reads, ``/api/models/{repo}`` (model info with its files)
    and ``/api/models/{repo}/tree/{revision}`` (file listing). A missing repo or file is a 404 with the
    ``X-Error-Code`` the hub sends. ``endpoint`` is what ``HF_ENDPOINT`` takes; ``requests`` logs each
    (method, path)."""

    def __init__(self, repos: dict[str, Path]):
        import hashlib
        import json
        from http.server import BaseHTTPRequestHandler
        from urllib.parse import urlsplit

        self.repos = {repo: Path(folder) for repo, folder in repos.items()}
        self.requests: list[tuple[str, str]] = []
        server = self

        def files(repo: str) -> list[Path]:
            return sorted(p for p in server.repos[repo].rglob("*") if p.is_file())

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self.answer(with_body=False)

            def do_GET(self):
                self.answer(with_body=True)

            def answer(self, with_body: bool) -> None:
                path = urlsplit(self.path).path
                server.requests.append((self.command, path))
                parts = path.strip("/").split("/")
                api = parts[:2] == ["api", "models"]
                repo = "/".join(parts[2:4] if api else parts[:2])
                if repo not in server.repos:
                    return self.send(404, b"", {"X-Error-Code": "RepoNotFound"}, with_body)
                folder = server.repos[repo]
                if api and len(parts) == 4:
                    siblings = [{"rfilename": p.relative_to(folder).as_posix()} for p in files(repo)]
                    info = {
                        "id": repo,
                        "modelId": repo,
                        "sha": HUB_COMMIT,
                        "private": False,
                        "siblings": siblings,
                    }
                    return self.send(200, json.dumps(info).encode(), {}, with_body)
                if api and len(parts) >= 6 and parts[4] == "tree":
                    under = folder.joinpath(*parts[6:])
                    listing = [
                        {"type": "file", "path": p.relative_to(folder).as_posix(), "size": p.stat().st_size,
                         "oid": hashlib.sha1(p.read_bytes()).hexdigest()}
                        for p in files(repo) if under in p.parents
                    ]  # fmt: skip
                    return self.send(200, json.dumps(listing).encode(), {}, with_body)
                if not api and len(parts) >= 5 and parts[2] == "resolve":
                    target = folder.joinpath(*parts[4:])
                    if target.is_file():
                        data = target.read_bytes()
                        etag = f'"{hashlib.sha256(data).hexdigest()}"'
                        return self.send(200, data, {"X-Repo-Commit": HUB_COMMIT, "ETag": etag}, with_body)
                    return self.send(
                        404, b"", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": HUB_COMMIT}, with_body
                    )
                self.send(404, b"", {"X-Error-Code": "EntryNotFound"}, with_body)

            def send(self, status: int, data: bytes, headers: dict, with_body: bool) -> None:
                self.send_response(status)
                for key, value in {"Content-Length": str(len(data)), **headers}.items():
                    self.send_header(key, value)
                self.end_headers()
                if with_body:
                    self.wfile.write(data)

        self._serve(Handler)
        self.endpoint = self.url.removesuffix("/v1")


def use_hub(monkeypatch, endpoint: str, cache: Path) -> None:
    """Point huggingface_hub at ``endpoint`` with an empty cache in ``cache``, for one test: the environment
    variables a user sets (``HF_ENDPOINT``, ``HF_HOME``, ``HF_HUB_CACHE``) and, as huggingface_hub read them
    when it was first imported, the constants it took from them."""
    from huggingface_hub import constants

    for name, value in {"HF_ENDPOINT": endpoint, "HF_HOME": cache, "HF_HUB_CACHE": cache / "hub"}.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def synthetic_experiment_records(
    folder: Path, n: int = 40, seed: int = 0, experiment: str = "ablations_cpu"
) -> Path:
    """An experiment folder (plan + one record per unit) with the packaged experiment's arms (``ablations_cpu``,
    ``probes_cpu``: its scoring variants, the descriptions arm on the described MELD lines only; or a learning
    curve such as ``learning_curve_cpu``: a larger size predicts better) and random predictions on a synthetic
    test sample, for tests that only read records (notebooks 05 and 09, the figures, the reports): real
    records are made in tests/experiments/test_experiments.py, test_probes_experiment.py and
    test_learning_curve.py."""
    import numpy as np

    from dialoguellm.experiments import record, runner, spec
    from dialoguellm.labels import LABELS
    from dialoguellm.runs import ExperimentLayout

    experiment = spec.load_experiment(experiment)
    layout = ExperimentLayout(Path(folder))
    rng = np.random.default_rng(seed)
    test = {
        d: {
            "example_id": [f"{d}{i}" for i in range(n)],
            "dialogue_id": [f"{d}{i // 4}" for i in range(n)],
            "gold_id": rng.integers(0, len(LABELS[d]), n).tolist(),
        }
        for d in ("meld", "emorynlp")
    }
    # the lines with a video description, marked as the runner marks them: every third MELD line
    if runner.marks_described(experiment):
        for d, part in test.items():
            part["described"] = [d == "meld" and i % 3 == 0 for i in range(n)]
    sizes = [s.label for s in experiment.samples.train_sizes]
    plan = {
        "format": record.FORMAT, "experiment": experiment.name, "description": experiment.description,
        "baseline": experiment.baseline, "seeds": experiment.seeds, "samples": experiment.samples.as_plan(),
        "metrics": experiment.metrics, "commands": ["synthetic records (tests/tiny.py)"],
        # the scoring fields (reuses, against, score_on, descriptions) as runner.open_plan writes them
        "arms": {a.name: {"label": a.label, "group": a.group, "tuned": a.tuned, "paper": a.paper, "kind": a.kind,
                          "datasets": list(a.config.data.datasets)} | a.scoring() for a in experiment.arms},
        "units": [[u.arm.name, u.seed] + ([u.size.label] if u.size else []) for u in experiment.units()],
        "test": test,
    } | ({"sizes": sizes} if sizes else {})  # fmt: skip
    from dialoguellm.io import write_json

    write_json(layout.plan, plan)
    identity = record.RunIdentity(None, "synthetic", None, "test", "3", {}, "synthetic", "test", 0.0, 0.0)
    for arm, s, size in experiment.units():
        right = 0.5 if size is None else 0.3 + 0.08 * sizes.index(size.label)
        predictions, samples = {}, {}
        for d in arm.config.data.datasets:
            scored = runner.scored_sample(arm, test[d])  # an arm scored on the described lines: those only
            if not scored["example_id"]:
                continue
            k = len(scored["example_id"])
            gold = np.array(scored["gold_id"])
            pred = np.where(rng.random(k) < right, gold, rng.integers(0, len(LABELS[d]), k))
            predictions[d] = record.Predictions(
                scored["example_id"], scored["dialogue_id"], scored["gold_id"], pred.tolist()
            )
            trained = size.of(10_000) if size is not None and s is not None else 0
            samples[d] = {"test": scored["example_id"]} | (
                {"train": [f"{d}t{i}" for i in range(trained)]} if size is not None else {}
            )
        record.save_unit(layout, record.UnitRecord(
            experiment.name, arm.name, s, identity, {}, samples, {}, predictions, {},
            size=size.label if size else None,
        ))  # fmt: skip
    return layout.root


# ------------------------------------------------ helpers shared by test modules of different layers
# Invented scenarios in the SECEU schema (not SECEU items).
SYNTHETIC_ITEMS = [
    {
        "story": "Mara's kite finally flew over the hill after ten failed tries.",
        "options": ["Proud", "Bored", "Ashamed", "Relieved"],
    },
    {
        "story": "Tom found his bike stolen on the morning of the race.",
        "options": ["Angry", "Cheerful", "Disappointed", "Calm"],
    },
    {
        "story": "A stranger returned Lin's lost wallet with every coin inside.",
        "options": ["Grateful", "Suspicious", "Surprised", "Jealous"],
    },
]
SYNTHETIC_STANDARD = {
    "standard_scores": [[4.0, 0.5, 0.5, 5.0], [4.5, 0.0, 4.5, 1.0], [5.0, 1.0, 3.5, 0.5]],
    "human_pattern": [2.1, 2.8, 3.3],
    "population_mean": 2.79,
    "population_std": 0.822,
}


def write_seceu(folder: Path, items=None, standard=None) -> Path:
    """A SECEU folder of invented items in the real schema (``SYNTHETIC_ITEMS``, ``SYNTHETIC_STANDARD``)."""
    from dialoguellm.analysis import seceu as eq

    folder.mkdir(parents=True, exist_ok=True)
    (folder / eq.ITEMS_FILE).write_text(json.dumps(SYNTHETIC_ITEMS if items is None else items))
    (folder / eq.STANDARD_FILE).write_text(json.dumps(SYNTHETIC_STANDARD if standard is None else standard))
    return folder


TURNS = [
    {"dialogue_id": "d1", "speaker": "Ross", "text": "I think the coffee is wonderful."},
    {"dialogue_id": "d1", "speaker": "Rachel", "text": "Whoa, really? I am so scared."},
    {"dialogue_id": "d1", "speaker": "Ross", "text": "That is gross."},
    {"dialogue_id": "d2", "speaker": "Joey", "text": "I am furious today!"},
    {"dialogue_id": "d2", "speaker": "Monica", "text": "Okay, okay."},
]


def tiny_config(model_dir: str, **prompt):
    """The tiny settings (``tiny_settings``) with one previous turn and ``prompt`` overrides, validated."""
    from dialoguellm.config import config_from_dict

    raw = tiny_settings(model_dir)
    raw["prompt"].update({"context_turns": 1, **prompt})
    return config_from_dict(raw)


def make_run(tmp_path: Path, model_dir: str, **prompt) -> Path:
    """A run folder as training leaves it: training/config.yaml and training/adapter/ (random LoRA B, so the
    adapter changes the scores)."""
    from dialoguellm.config import save_config
    from dialoguellm.runs import RunLayout

    run = tmp_path / "run"
    layout = RunLayout(run)
    config = tiny_config(model_dir, **prompt)
    save_config(config, layout.training / "config.yaml")
    save_random_adapter(model_dir, layout.adapter)
    return run


def write_clip(path: Path, seconds: float = 1.0, fps: int = 8, size: tuple[int, int] = (48, 32)) -> Path:
    """A synthetic MPEG-4 clip of ``seconds`` (needs PyAV: call ``pytest.importorskip("av")`` first)."""
    import av
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(int(seconds * fps)):
            img = np.full((size[1], size[0], 3), 20 * i % 255, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


class ChatServer(LocalServer):
    """Speaks POST /v1/chat/completions; answers per the prompt's MODE marker and counts requests."""

    def __init__(self):
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.counts: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                text = body["messages"][0]["content"][0]["text"]
                marker = re.search(r"MODE=(\S+)", text)
                mode = marker.group(1) if marker else "ok"  # the packaged prompt has no marker
                with server.lock:
                    server.requests.append(body)
                    server.headers.append(dict(self.headers))
                    n = server.counts[mode] = server.counts.get(mode, 0) + 1
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    self.answer(mode, n, body)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def send(self, status, payload: bytes, headers=None):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

            def ok(self, body):
                n_images = sum(part["type"] == "image_url" for part in body["messages"][0]["content"])
                content = f"A person stands in a kitchen ({n_images} frames)."
                self.send(
                    200,
                    json.dumps(
                        {"choices": [{"message": {"role": "assistant", "content": content}}]}
                    ).encode(),
                )

            def answer(self, mode, n, body):
                if mode == "ok":
                    self.ok(body)
                elif mode == "429x2":  # rate limited twice, then fine
                    if n <= 2:
                        self.send(429, b'{"error": "rate limited"}', {"Retry-After": "0"})
                    else:
                        self.ok(body)
                elif mode == "500":
                    self.send(500, b'{"error": "upstream exploded"}')
                elif mode == "slow":
                    time.sleep(1.0)
                    self.ok(body)
                elif mode == "steady":  # slow enough that parallel requests overlap
                    time.sleep(0.15)
                    self.ok(body)
                elif mode == "malformed":
                    self.send(200, b'{"choices": [{"message": ')
                elif mode == "echo401":  # a provider that echoes the key back in its error
                    auth = self.headers.get("Authorization", "")
                    self.send(401, json.dumps({"error": f"invalid key {auth}"}).encode())

        self._serve(Handler)


# ------------------------------------------------ the book (make book): what a complete site holds


def image_outputs(notebook: Path) -> int:
    """How many figures (PNG or SVG outputs) an executed notebook holds."""
    import nbformat

    cells = nbformat.read(notebook, as_version=4).cells
    return sum(
        1
        for cell in cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if {"image/png", "image/svg+xml"} & set(output.get("data", {}))
    )


def assert_book_complete(run_dir: Path, site: Path, repo_dir: Path | None = None) -> None:
    """Every executed notebook has its page with every one of its figures (files present), every doc has
    its page, and the front page is the README with links to them all (``make book``; tests/interop/test_book.py)."""
    from dialoguellm.interop import book

    repo_dir = book.REPO_DIR if repo_dir is None else repo_dir
    notebooks = sorted((run_dir / "notebooks").glob("*.ipynb"))
    assert notebooks, "the run holds no executed notebooks"
    front = (site / "index.html").read_text(encoding="utf-8")
    for notebook in notebooks:
        page = site / "notebooks" / f"{notebook.stem}.html"
        assert page.is_file(), f"no page for {notebook.name}"
        assert f'href="notebooks/{notebook.stem}.html"' in front
        images = re.findall(r'<img[^>]+src="\.\./(_images/[^"]+)"', page.read_text(encoding="utf-8"))
        assert len(images) == image_outputs(notebook), f"{notebook.name}: figures missing from its page"
        assert all((site / image).is_file() for image in images)
    for doc in (repo_dir / "docs").glob("*.md"):
        assert (site / "docs" / f"{doc.stem}.html").is_file(), f"no page for docs/{doc.name}"
    assert "dialoguellm" in front and "docs/GUIDE.html" in front
