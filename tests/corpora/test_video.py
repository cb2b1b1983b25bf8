"""Video descriptions: clip lookup, frame sampling, the local describer (a tiny random VLM built here),
the append-only cache (including a real kill -9), and the import of existing descriptions."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from tiny import shared_dir

from dialoguellm.corpora import readers, video
from dialoguellm.plots import corpora as corpus_plots
from dialoguellm.runs import REPO_DIR

av = pytest.importorskip("av")


def write_clip(path: Path, seconds: float = 2.0, fps: int = 12, size: tuple[int, int] = (64, 48)) -> Path:
    """A small MPEG-4 clip whose brightness rises with time, so frame positions can be checked."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = int(seconds * fps)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(n):
            level = int(255 * i / max(1, n - 1))
            img = np.full((size[1], size[0], 3), level, dtype=np.uint8)
            img[: size[1] // 4, : size[0] // 4] = (255 - level, 0, 0)  # some structure for the encoder
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def records_for(pairs: list[tuple[str, str]]) -> list[dict]:
    return [{"dataset": "meld", "split": s, "clip_id": c, "text": "hi"} for s, c in pairs]


@pytest.fixture(scope="module")
def meld_raw(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("MELD.Raw")
    write_clip(root / "output_repeated_splits_test" / "dia0_utt0.mp4")
    write_clip(root / "output_repeated_splits_test" / "dia0_utt1.mp4", seconds=1.0)
    write_clip(root / "dev_splits_complete" / "dia0_utt0.mp4")
    (root / "output_repeated_splits_test" / "dia1_utt0.mp4").write_bytes(os.urandom(2000))  # broken clip
    return root


RECORDS = records_for(
    [
        ("test", "dia0_utt0"),
        ("test", "dia0_utt1"),
        ("test", "dia1_utt0"),
        ("test", "dia2_utt0"),
        ("dev", "dia0_utt0"),
    ]
)


# ------------------------------------------------------------------------------------------- lookup
def test_find_clips_maps_splits_and_reports_missing(meld_raw):
    index = video.find_clips(RECORDS, meld_raw)
    found = {ref.uid: ref.path for ref in index.found}
    assert set(found) == {"test/dia0_utt0", "test/dia0_utt1", "test/dia1_utt0", "dev/dia0_utt0"}
    # Same clip id, different split: different files.
    assert found["test/dia0_utt0"].parent.name == "output_repeated_splits_test"
    assert found["dev/dia0_utt0"].parent.name == "dev_splits_complete"
    assert [ref.uid for ref in index.missing] == ["test/dia2_utt0"]
    assert index.coverage()["test"] == {"found": 3, "missing": 1, "total": 4}
    report = index.report()
    assert "test/dia2_utt0" in report and "output_repeated_splits_test/dia2_utt0.mp4" in report


def test_find_clips_accepts_nested_layout_and_names_a_missing_folder(meld_raw, tmp_path):
    nested = tmp_path / "MELD.Raw" / "test"
    write_clip(nested / "output_repeated_splits_test" / "dia0_utt0.mp4", seconds=0.5)
    index = video.find_clips(records_for([("test", "dia0_utt0")]), tmp_path)
    assert [ref.uid for ref in index.found] == ["test/dia0_utt0"]
    with pytest.raises(FileNotFoundError, match="CLIPS_DIR"):
        video.find_clips(RECORDS, tmp_path / "nope")


def test_clip_refs_reads_a_dataset_dict_and_dedups():
    datasets = pytest.importorskip("datasets")
    dd = datasets.DatasetDict(
        {
            "test": datasets.Dataset.from_list(records_for([("test", "dia0_utt0"), ("test", "dia0_utt0")])),
            "dev": datasets.Dataset.from_list(records_for([("dev", "dia0_utt0")])),
        }
    )
    assert [r.uid for r in video.clip_refs(dd)] == ["test/dia0_utt0", "dev/dia0_utt0"]
    assert [r.uid for r in video.clip_refs(dd, splits=["dev"])] == ["dev/dia0_utt0"]


# ------------------------------------------------------------------------------------------- frames
def test_sample_frames_spreads_over_the_clip_and_resizes(meld_raw):
    clip = meld_raw / "output_repeated_splits_test" / "dia0_utt0.mp4"
    frames = video.sample_frames(clip, n_frames=4, max_side=32)
    assert len(frames) == 4
    assert all(max(f.size) == 32 and f.size == (32, 24) for f in frames)  # aspect ratio kept
    brightness = [float(np.asarray(f)[20:, 20:].mean()) for f in frames]
    assert brightness == sorted(brightness) and brightness[-1] - brightness[0] > 100
    # Centres of four equal parts: about 1/8 and 7/8 of the way, never the first or last frame.
    assert 10 < brightness[0] < 70 and 185 < brightness[-1] < 245
    (middle,) = video.sample_frames(clip, n_frames=1, max_side=64)
    assert middle.size == (64, 48)
    assert 100 < float(np.asarray(middle)[20:, 20:].mean()) < 160


def test_sample_frames_names_the_broken_file(meld_raw, tmp_path):
    bad = meld_raw / "output_repeated_splits_test" / "dia1_utt0.mp4"
    with pytest.raises(video.FrameError, match="dia1_utt0.mp4"):
        video.sample_frames(bad)
    with pytest.raises(video.FrameError, match="not found"):
        video.sample_frames(tmp_path / "missing.mp4")


# ------------------------------------------------------------------------------------------- prompt
def test_prompt_template_asks_for_visible_cues_and_forbids_labels():
    prompt = video.load_prompt(n_frames=3)
    lower = prompt.lower()
    for cue in ("facial expression", "gaze", "posture", "gestures", "scene", "other people"):
        assert cue in lower
    assert "3 frame" in prompt and "{n_frames}" not in prompt
    assert "do not name, guess or imply an emotion" in lower
    assert video.prompt_hash(prompt) != video.prompt_hash(video.load_prompt(n_frames=4))


# ------------------------------------------------------------------------------- local VLM pipeline
def build_tiny_vlm(folder: Path) -> Path:
    """A random LLaVA (1-layer CLIP vision tower + 1-layer Llama) with a byte-level tokenizer, built offline."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
    )
    template = (
        "{% for m in messages %}{{ m['role'] }}: {% for c in m['content'] %}"
        "{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant:{% endif %}"
    )
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        ),
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=template,
    )
    image_token = tokenizer.convert_tokens_to_ids("<image>")
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        text_config=LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=512,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        image_token_index=image_token,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_local_vlm_pipeline_fills_the_cache_end_to_end(meld_raw, tmp_path):
    model_dir = build_tiny_vlm(tmp_path / "tiny-vlm")
    run = tmp_path / "run"
    index = video.find_clips(RECORDS, meld_raw)
    describer = video.make_describer("transformers", model=str(model_dir), max_new_tokens=6)
    summary = video.describe_clips(index.found, describer, video.cache_path(run), n_frames=2, progress=False)
    assert (summary.clips, summary.attempted, summary.done, summary.failed, summary.left) == (4, 4, 3, 1, 1)
    assert summary.failures[0]["clip"] == "test/dia1_utt0" and "FrameError" in summary.failures[0]["error"]

    cache = video.DescriptionCache(run)
    lines = cache.path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 4
    rec = json.loads(lines[0])
    assert rec["describer"] == "transformers" and rec["model"] == str(model_dir) and rec["n_frames"] == 2
    assert rec["prompt_hash"] == video.prompt_hash(video.load_prompt(2))
    # The prompt text is kept beside its hash.
    assert (
        cache.path.parent / "prompts" / f"{rec['prompt_hash']}.txt"
    ).read_text().strip() == video.load_prompt(2)
    ok = {(r["split"], r["clip_id"]): r["description"] for r in cache.ok_records()}
    assert set(ok) == {("test", "dia0_utt0"), ("test", "dia0_utt1"), ("dev", "dia0_utt0")}
    assert all(text.strip() for text in ok.values())

    # Re-running skips everything; the failure is kept unless a retry is asked for.
    again = video.describe_clips(
        index.found, describer, run / "descriptions" / "descriptions.jsonl", n_frames=2, progress=False
    )
    assert (again.attempted, again.already_done, again.skipped_failed) == (0, 3, 1)
    retry = video.describe_clips(index.found, describer, cache, n_frames=2, retry_failed=True, progress=False)
    assert (retry.attempted, retry.failed) == (1, 1)
    assert len(cache.path.read_text().splitlines()) == 5
    # Another number of frames is another prompt, hence new cache keys; limit caps the work.
    other = video.describe_clips(index.found, describer, cache, n_frames=1, limit=2, progress=False)
    assert (other.attempted, other.done) == (2, 2)

    # What the prompt builder reads: clip id -> text, per split (MELD reuses clip ids across splits).
    by_split = video.load_descriptions(run)
    assert sum(bool(clips) for clips in by_split.values()) > 1  # several splits, each its own map
    test_map = video.load_descriptions(run, model=str(model_dir))["test"]
    assert set(test_map) == {"dia0_utt0", "dia0_utt1"}
    assert video.load_descriptions(tmp_path / "no-run") == {"train": {}, "dev": {}, "test": {}}


def test_make_describer_rejects_unknown_names(monkeypatch):
    with pytest.raises(ValueError, match="transformers', 'openai' or 'import'"):
        video.make_describer("ernie")
    assert video.make_describer("transformers").model == video.DEFAULT_LOCAL_MODEL  # loads lazily
    monkeypatch.delenv(video.ENV_BASE_URL, raising=False)
    with pytest.raises(ValueError, match=video.ENV_BASE_URL):
        video.make_describer("openai", model="m")


# -------------------------------------------------------------------------------------------- cache
class EchoDescriber(video.Describer):
    """Needs no frames; same name/model as the child process's describer below, hence the same keys."""

    name = "echo"
    model = "echo-1"
    needs_frames = False

    def describe(self, clip, frames, prompt):
        return f"description of {clip.uid}"


CHILD = """
import sys, time
from dialoguellm.corpora import video
class Slow(video.Describer):
    name, model, needs_frames = "echo", "echo-1", False
    def describe(self, clip, frames, prompt):
        time.sleep(0.01)
        return f"description of {clip.uid}"
clips = [video.ClipRef("test", f"dia{i}_utt0") for i in range(int(sys.argv[2]))]
video.describe_clips(clips, Slow(), sys.argv[1], progress=False)
"""


def test_kill_9_mid_run_resumes_without_loss_or_duplicates(tmp_path):
    cache_file = tmp_path / "descriptions.jsonl"
    n = 400
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(cache_file), str(n)], cwd=REPO_DIR)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and child.poll() is None:
        if cache_file.exists() and cache_file.read_bytes().count(b"\n") >= 30:
            break
        time.sleep(0.02)
    assert child.poll() is None, "the child finished before it could be killed; raise n"
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL
    written = cache_file.read_bytes().count(b"\n")
    assert 30 <= written < n
    # A crash can also tear the last line (e.g. a full disk); simulate that on top of the kill.
    with open(cache_file, "ab") as fh:
        fh.write(b'{"key": "test/dia999_utt0|echo|echo-1|abc", "sta')

    clips = [video.ClipRef("test", f"dia{i}_utt0") for i in range(n)]
    summary = video.describe_clips(clips, EchoDescriber(), cache_file, progress=False)
    assert summary.already_done == written and summary.attempted == n - written and summary.left == 0
    lines = cache_file.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]  # every line parses: the torn one was cut off
    ids = [r["clip_id"] for r in records]
    assert len(ids) == len(set(ids)) == n
    assert video.load_descriptions(cache_file)["test"] == {
        f"dia{i}_utt0": f"description of test/dia{i}_utt0" for i in range(n)
    }


def test_failures_are_recorded_with_their_reason_and_retried_on_request(tmp_path):
    class Flaky(EchoDescriber):
        name = "flaky"
        fail = True

        def describe(self, clip, frames, prompt):
            if self.fail and clip.clip_id == "dia1_utt0":
                raise RuntimeError("provider refused")
            return "" if clip.clip_id == "dia2_utt0" else super().describe(clip, frames, prompt)

    clips = [video.ClipRef("test", f"dia{i}_utt0") for i in range(3)]
    describer = Flaky()
    first = video.describe_clips(clips, describer, tmp_path / "run", progress=False)
    assert (first.done, first.failed) == (1, 2)
    errors = {f["clip"]: f["error"] for f in first.failures}
    assert errors == {
        "test/dia1_utt0": "RuntimeError: provider refused",
        "test/dia2_utt0": "ValueError: the describer returned an empty description",
    }
    describer.fail = False
    second = video.describe_clips(clips, describer, tmp_path / "run", retry_failed=True, progress=False)
    assert (second.attempted, second.done, second.failed, second.left) == (2, 1, 1, 1)
    assert set(video.load_descriptions(tmp_path / "run")["test"]) == {"dia0_utt0", "dia1_utt0"}


# ------------------------------------------------------------------------------------------- import
def meld_test_clip_ids() -> set[str]:
    with open(
        REPO_DIR / "dialoguellm" / "corpora" / "raw" / "meld" / "test_sent_emo.csv",
        encoding="utf-8",
        newline="",
    ) as fh:
        return {f"dia{r['Dialogue_ID']}_utt{r['Utterance_ID']}" for r in csv.DictReader(fh)}


def test_vendored_descriptions_all_match_meld_test_utterances(tmp_path):
    test_ids = meld_test_clip_ids()
    rows = [json.loads(line) for line in video.VENDORED_DESCRIPTIONS.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 191
    assert all(set(r) == {"clip_id", "description"} for r in rows)  # no labels, transcripts or summaries
    assert {r["clip_id"] for r in rows} <= test_ids
    assert (video.VENDORED_DESCRIPTIONS.parent / "LICENSE").read_text().startswith("MIT License")

    clips = [video.ClipRef(s, c) for s in ("train", "test") for c in sorted(test_ids)]
    describer = video.make_describer(
        "import", model=video.VENDORED_MODEL, path=video.VENDORED_DESCRIPTIONS, split="test"
    )
    summary = video.describe_clips(clips, describer, tmp_path, progress=False)
    assert (summary.clips, summary.done, summary.failed) == (191, 191, 0)
    described = video.load_descriptions(tmp_path)["test"]
    assert described == {r["clip_id"]: r["description"] for r in rows}
    assert video.describe_clips(clips, describer, tmp_path, progress=False).attempted == 0


@pytest.mark.shared
def test_vendored_descriptions_never_carry_the_label_conditioned_summary():
    shared = shared_dir()
    source = shared / "data" / "meld_video_descriptions" / "sorted_annotations.json" if shared else None
    if source is None or not source.is_file():
        pytest.skip("../shared/data/meld_video_descriptions is not here")
    originals = {
        r["video_id"].removesuffix(".mp4"): r for r in json.loads(source.read_text(encoding="utf-8"))
    }
    vendored = video.VENDORED_DESCRIPTIONS.read_text(encoding="utf-8")
    for rec in originals.values():
        assert rec["fine-grained_summary"][:80] not in vendored
        assert json.dumps(rec["visual_objective_description"].strip(), ensure_ascii=False)[1:-1] in vendored


def test_import_reads_csv_json_list_and_json_object(tmp_path):
    clips = [video.ClipRef("dev", "dia0_utt0"), video.ClipRef("dev", "dia0_utt1")]
    (tmp_path / "d.csv").write_text(
        "clip_id,description\ndia0_utt0.mp4,a man waves\ndia0_utt1,two people sit\n"
    )
    (tmp_path / "d.json").write_text(json.dumps([{"clip": "dia0_utt0", "text": "a man waves"}]))
    (tmp_path / "o.json").write_text(json.dumps({"dia0_utt1": "two people sit"}))
    for name, kwargs, expected in [
        ("d.csv", {}, {"dia0_utt0": "a man waves", "dia0_utt1": "two people sit"}),
        ("d.json", {"id_field": "clip", "text_field": "text"}, {"dia0_utt0": "a man waves"}),
        ("o.json", {}, {"dia0_utt1": "two people sit"}),
    ]:
        run = tmp_path / name.replace(".", "_")
        video.describe_clips(
            clips, video.make_describer("import", path=tmp_path / name, **kwargs), run, progress=False
        )
        assert video.load_descriptions(run)["dev"] == expected


# Bad description files and caches: tests/bad_inputs/test_descriptions.py


# -------------------------------------------------------------------------------------------- plots
def test_figures_are_written(meld_raw, tmp_path):

    coverage = {"train": {"clips": 10, "described": 0}, "test": {"clips": 4, "described": 3}}
    frames = video.sample_frames(meld_raw / "output_repeated_splits_test" / "dia0_utt0.mp4", n_frames=3)
    paths = [
        corpus_plots.plot_description_coverage(coverage, tmp_path / "coverage.png"),
        corpus_plots.plot_description_lengths([12, 40, 41, 300], tmp_path / "lengths.png"),
        corpus_plots.plot_frames_with_descriptions(
            [{"title": "test/dia0_utt0", "frames": frames, "description": "a person " * 200}],
            tmp_path / "f.png",
        ),
    ]
    for p in paths:
        assert p.is_file() and p.read_bytes()[:4] == b"\x89PNG"


def test_figure_producers_redraw_from_a_run(tmp_path):

    run, out = tmp_path / "run", tmp_path / "out"
    assert corpus_plots.lengths_figure_from_run(run, out) is None  # nothing to draw yet
    describer = video.make_describer("import", path=video.VENDORED_DESCRIPTIONS, split="test")
    meld = readers.load_meld()
    video.describe_clips(video.clip_refs(meld), describer, run, progress=False)
    assert corpus_plots.coverage_figure_from_run(run, out) is None  # no curated MELD in the run
    readers.save_curated(meld, run)
    assert corpus_plots.coverage_figure_from_run(run, out).name == "video_description_coverage.png"
    assert corpus_plots.lengths_figure_from_run(run, out).stat().st_size > 5_000


@pytest.mark.slow
def test_notebook_with_clips_describes_and_shows_frames(tmp_path):
    """The notebook's video branch (the tiny-parameter run in test_notebooks covers the import branch)."""
    from dialoguellm import pipeline
    from dialoguellm.runs import load_record

    raw = tmp_path / "MELD.Raw"
    for clip_id in ("dia0_utt0", "dia0_utt1", "dia1_utt0"):
        write_clip(raw / "output_repeated_splits_test" / f"{clip_id}.mp4", seconds=1.0)
    model_dir = build_tiny_vlm(tmp_path / "tiny-vlm")
    run = tmp_path / "run"
    params = {"CLIPS_DIR": str(raw), "MODEL": str(model_dir), "N_FRAMES": 2, "LIMIT": 2, "SPLITS": ["test"]}
    pipeline.run_notebook(
        REPO_DIR / "notebooks" / "02_video_descriptions.ipynb",
        run,
        params,
        figures=run / "figures",
        timeout=300,
    )
    record = load_record(run, "02_video_descriptions")
    assert record["describer"] == "transformers" and record["model"] == str(model_dir)
    assert record["run"]["attempted"] == 2 and record["run"]["done"] == 2
    assert record["coverage"]["test"]["described"] == 2 and record["coverage"]["test"]["clips"] == 2610
    assert (run / "figures" / "video_description_examples.png").stat().st_size > 5_000
    executed = (run / "notebooks" / "02_video_descriptions.ipynb").read_text()
    assert "2607 missing" in executed and '"output_type": "error"' not in executed
