"""A small synthetic IEMOCAP tree in the official release layout (the real corpus is licensed and never
committed). Text is invented; the file formats follow IEMOCAP_full_release exactly, noise lines included."""

from __future__ import annotations

from pathlib import Path

# (label, text) per turn; labels outside the six ERC classes (xxx, sur, fru kept) are dropped by the loader.
TURNS = [
    ("neu", "Excuse me."),
    ("fru", "Do you have your forms?"),
    ("ang", "Yeah. I filled them out yesterday."),
    ("xxx", "Hmm."),
    ("hap", "That's great, thank you."),
    ("sur", "Wait, really?"),
    ("exc", "We made it!"),
    ("sad", "I just miss her."),
]
DIALOGUES_PER_SESSION = 3


def dialogue_names(session: int) -> list[str]:
    return [f"Ses{session:02d}F_impro{i + 1:02d}" for i in range(DIALOGUES_PER_SESSION)]


def build_iemocap_tree(root: Path) -> Path:
    """Write ``root/IEMOCAP_full_release`` and return it. Per dialogue: 8 labelled turns (6 kept), one
    overlapping ``XX`` turn, and noise lines that the loader must skip."""
    release = root / "IEMOCAP_full_release"
    for session in range(1, 6):
        dialog = release / f"Session{session}" / "dialog"
        (dialog / "transcriptions").mkdir(parents=True)
        (dialog / "EmoEvaluation").mkdir(parents=True)
        for name in dialogue_names(session):
            transcript, evaluation = [], ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
            start = 6.2901
            for turn, (label, text) in enumerate(TURNS):
                speaker = "F" if turn % 2 == 0 else "M"
                utt = f"{name}_{speaker}{turn:03d}"
                end = start + 1.9456
                transcript.append(f"{utt} [{start:08.4f}-{end:08.4f}]: {text}")
                evaluation += [
                    f"[{start:.4f} - {end:.4f}]\t{utt}\t{label}\t[2.5000, 2.5000, 2.5000]",
                    "C-E2:\tNeutral;\t()",
                    "A-E3:\tval 3; act 2; dom  2;\t()",
                    "",
                ]
                start = end + 0.5
                if turn == 2:
                    # noise: a non-"Ses" line and an overlapping turn, both skipped by the official tools
                    transcript.append("M: [BREATHING]")
                    transcript.append(f"{name}_MXX0 [{start:08.4f}-{start + 1:08.4f}]: [LAUGHTER]")
            (dialog / "transcriptions" / f"{name}.txt").write_text("\n".join(transcript) + "\n")
            (dialog / "EmoEvaluation" / f"{name}.txt").write_text("\n".join(evaluation) + "\n")
    return release
