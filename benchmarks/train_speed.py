"""Training speed: our LoRA step against a plain transformers Trainer, same model and data, one run.

    dialoguellm benchmark train_speed           # embedded default (the cpu profile), 2 x 8 micro-batches

Both train a fresh LoRA adapter (the cpu profile: r 8 on all linear layers, micro-batch 8, bf16 autocast,
AdamW) on the same training prompts of MELD and EmoryNLP (1-shot, z = 1):

- baseline: ``transformers.Trainer`` with every example padded to the cutoff (256 tokens), labels -100 on
  the prompt, i.e. logits over the whole vocabulary at every position;
- ours: ``dialoguellm.training.loss.answer_loss`` as the trainer runs it: length-grouped micro-batches of one
  corpus, the shared prefix (system message, instruction, demonstration) run once per micro-batch, dynamic
  padding, logits at the answer positions only.

Printed: real (non-pad) prompt+answer tokens per second of each and their ratio (the same tokens, so the
ratio is the speed-up), and each method's padding waste (pad tokens / tokens computed; target <= 10%).
The first step of each is a warm-up and not timed. The JSON lands in benchmarks/results/ (``--out``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from dialoguellm import prompts, runs
from dialoguellm.config import add_config_options, config_from_options
from dialoguellm.corpora import readers
from dialoguellm.model import loading
from dialoguellm.scoring import engine
from dialoguellm.training import loop
from dialoguellm.training import loss as training_loss

RESULTS = Path(__file__).resolve().parent / "results"


def training_dtype(config) -> str:
    """What both methods multiply in: the trainer's choice on this machine (train.precision; auto: fp32 on a
    CPU without bf16 units, where bf16 products are emulated)."""
    return loading.training_dtype(config.train.precision, config.model.dtype)[0]


def fresh_lora(config):
    """A fresh LoRA model of the profile; its frozen weights fp32 copies of the same values when training
    multiplies in fp32, as the trainer holds them."""
    loaded = loading.load_model(config.model.name, config.model.dtype, config.model.quantization)
    if training_dtype(config) == "fp32":
        loaded.model.to(torch.float32)
    loop.set_seed(config.train.seed)
    lora = config.lora
    return loaded, loading.add_lora(loaded.model, lora.r, lora.alpha, lora.dropout, lora.target_modules)


def ours(config, prepared, batches) -> dict:
    loaded, model = fresh_lora(config)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.train.lr)
    stats: dict[str, int] = {}
    seconds, real = 0.0, 0
    model.train()
    for i, (name, idx) in enumerate(batches):
        items = [prepared.examples["train"][name][j] for j in idx]
        answers = [prepared.builders[name].answer_ids[e.label_id] for e in items]
        start = time.perf_counter()
        with engine.autocast_context(model, training_dtype(config)):
            loss, _ = training_loss.answer_loss(
                model, [e.prompt_ids for e in items], answers, loaded.tokenizer.pad_token_id, True, stats
            )
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i == 0:  # warm-up
            stats.clear()
            continue
        seconds += time.perf_counter() - start
        real += sum(len(e.prompt_ids) + len(a) for e, a in zip(items, answers, strict=True))
    return {
        "seconds": round(seconds, 2),
        "real_tokens": real,
        "tokens_computed": stats["tokens"],
        "pad_tokens": stats["pad_tokens"],
        "padding_waste": round(stats["pad_tokens"] / stats["tokens"], 4),
        "tokens_per_second": round(real / seconds, 1),
    }


def baseline(config, prepared, batches) -> dict:
    from transformers import Trainer, TrainerCallback, TrainingArguments, default_data_collator

    loaded, model = fresh_lora(config)
    cutoff, pad = config.prompt.cutoff_len, loaded.tokenizer.pad_token_id
    rows, real = [], 0
    for name, idx in batches:  # the same examples, in the same micro-batches
        for j in idx:
            e = prepared.examples["train"][name][j]
            answer = prepared.builders[name].answer_ids[e.label_id]
            ids = list(e.prompt_ids) + list(answer)
            n = len(ids)
            rows.append(
                {
                    "input_ids": ids + [pad] * (cutoff - n),
                    "attention_mask": [1] * n + [0] * (cutoff - n),
                    "labels": [-100] * len(e.prompt_ids) + list(answer) + [-100] * (cutoff - n),
                }
            )
    real = sum(sum(r["attention_mask"]) for r in rows[len(batches[0][1]) :])

    class Clock(TrainerCallback):
        def __init__(self):
            self.start = self.end = None

        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 1:  # after the warm-up step
                self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.end = time.perf_counter()

    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=config.train.micro_batch_size,
            max_steps=len(batches),
            learning_rate=config.train.lr,
            lr_scheduler_type="constant",
            bf16=training_dtype(config) == "bf16",
            use_cpu=not torch.cuda.is_available(),
            report_to=[],
            save_strategy="no",
            logging_strategy="no",
            dataloader_num_workers=0,
            seed=config.train.seed,
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=rows,
            data_collator=default_data_collator,
            callbacks=[clock],
        )
        trainer._get_train_sampler = lambda *a, **k: torch.utils.data.SequentialSampler(rows)
        trainer.train()
    seconds = clock.end - clock.start
    computed = cutoff * (len(rows) - config.train.micro_batch_size)
    return {
        "seconds": round(seconds, 2),
        "real_tokens": real,
        "tokens_computed": computed,
        "pad_tokens": computed - real,
        "padding_waste": round((computed - real) / computed, 4),
        "tokens_per_second": round(real / seconds, 1),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_options(parser)
    parser.add_argument("--micro-batches", type=int, default=16, help="micro-batches per method (1 warm-up)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default=str(RESULTS / "train_speed_cpu.json"))
    args = parser.parse_args(argv)

    config = config_from_options(args)
    loading.set_threads(config.model.num_threads)
    # The first micro-batches of the real first epoch (the config's training sample, length-grouped as the
    # trainer groups it), keeping full ones only so that the Trainer's batches are the same.
    corpora = readers.load_corpora(config.data.datasets, args.data_dir)
    loaded = loading.load_model(config.model.name, config.model.dtype, config.model.quantization)
    prepared = prompts.prepare_examples(config, loaded.tokenizer, corpora, ("train",))
    size = config.train.micro_batch_size
    epoch = training_loss.micro_batches(
        prepared.examples["train"], size, config.train.seed, config.train.group_by_length
    )
    batches = [b for b in epoch if len(b[1]) == size][: args.micro_batches]
    result_ours = ours(config, prepared, batches)
    result_base = baseline(config, prepared, batches)
    ratio = round(result_ours["tokens_per_second"] / result_base["tokens_per_second"], 2)
    result = {
        **runs.benchmark_header("train_speed", argv, model=config.model.name),
        "settings": {
            "micro_batch_size": config.train.micro_batch_size,
            "micro_batches_timed": len(batches) - 1,
            "cutoff_len": config.prompt.cutoff_len,
            "lora_r": config.lora.r,
            "target_modules": list(config.lora.target_modules),
            "dtype": config.model.dtype,
        },
        "ours": result_ours,
        "plain_trainer": result_base,
        "speedup": ratio,
        "targets_met": {"padding waste <= 10%": result_ours["padding_waste"] <= 0.10},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(
        f"\n{'method':<15}{'tokens/s':>10}{'padding':>9}{'seconds':>9}   ({len(batches) - 1} micro-batches timed)"
    )
    for name, r in (("ours", result_ours), ("plain Trainer", result_base)):
        print(
            f"{name:<15}{r['tokens_per_second']:>10.1f}{100 * r['padding_waste']:>8.1f}%{r['seconds']:>9.1f}"
        )
    print(f"speed-up: {ratio}x on the same {result_ours['real_tokens']} real tokens")
    print(f"written to {out}")
    return result


if __name__ == "__main__":
    main()
