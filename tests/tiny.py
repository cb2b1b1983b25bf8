"""Test helpers: a tiny random LLaMA with an offline word-level tokenizer, and synthetic dialogues.

The tiny model is built in the test session from ``LlamaConfig`` (no download), with a tokenizer trained on
the fly over the words our prompts use, a ChatML chat template, and saved to a folder so that notebooks can
take it as their MODEL path (``tiny_model_dir``).
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from dialoguellm.corpora.labels import LABELS, NORMALISATION

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


def synthetic_retrained_results(folder: Path, n: int = 40, seed: int = 0) -> Path:
    """A retrained-ablation results file (``analysis.ablation_retrained``) with the packaged cpu grid's arms
    and random predictions on a synthetic sample, for tests that only read one (notebook 05, the figures):
    what the file holds is checked in tests/test_ablation_retrained.py, which makes a real one."""
    import numpy as np

    from dialoguellm.analysis import ablation_retrained
    from dialoguellm.corpora.labels import LABELS

    grid = ablation_retrained.load_grid("cpu")
    rng = np.random.default_rng(seed)
    sample = {
        d: {
            "example_id": [f"{d}{i}" for i in range(n)],
            "dialogue_id": [f"{d}{i // 4}" for i in range(n)],
            "gold_id": rng.integers(0, len(LABELS[d]), n).tolist(),
        }
        for d in ("meld", "emorynlp")
    }
    runs = {}
    for arm, s in grid.jobs():
        scored = {}
        for d in arm.config.data.datasets:
            gold = np.array(sample[d]["gold_id"])
            pred = np.where(rng.random(n) < 0.5, gold, rng.integers(0, len(LABELS[d]), n))
            acc = float((pred == gold).mean())
            scored[d] = {
                "n": n,
                "accuracy": acc,
                "weighted_f1": acc,
                "macro_f1": acc,
                "pred_id": pred.tolist(),
            }
        runs[ablation_retrained.job_key(arm, s)] = {
            "arm": arm.name,
            "seed": s,
            "trained": arm.tuned,
            "datasets": scored,
        }
    results = {
        "format": ablation_retrained.FORMAT, "command": "synthetic results (tests/tiny.py)", "commands": [],
        "grid": grid.settings(), "environment": {"note": "synthetic"}, "hardware": "test", "model": "tiny",
        "sample": sample, "runs": runs, "finished": True, "updated": "test",
    }  # fmt: skip
    return ablation_retrained.save_results(results, folder)
