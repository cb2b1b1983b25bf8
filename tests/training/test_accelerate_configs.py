"""configs/accelerate/*.yaml: each file is one that `accelerate launch` accepts, and means what it says.

Nothing is launched: the files go through accelerate's own config loader (which rejects unknown keys and
unknown distributed types) and its launch-argument validation, with the commands docs/SCALING.md shows.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import DistributedType

from dialoguellm.config import resolve_config_path

REPO = Path(__file__).resolve().parents[2]
FOLDER = REPO / "configs" / "accelerate"
EXPECTED = {
    "single_gpu.yaml": DistributedType.NO,
    "ddp.yaml": DistributedType.MULTI_GPU,
    "deepspeed_zero2.yaml": DistributedType.DEEPSPEED,
    "ddp_multinode.yaml": DistributedType.MULTI_GPU,
}
TRAIN = ["-m", "dialoguellm.cli", "train", "--config", "dialoguellm/profiles/paper.yaml"]


def test_every_expected_file_is_there_and_nothing_else():
    assert sorted(p.name for p in FOLDER.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_accelerate_reads_the_file(name):
    config = load_config_from_file(str(FOLDER / name))
    assert isinstance(config, ClusterConfig)
    assert config.distributed_type == EXPECTED[name]
    assert config.mixed_precision == "bf16"
    assert config.use_cpu is False
    if config.distributed_type == DistributedType.NO:
        assert config.num_processes == 1 and config.num_machines == 1
    else:
        assert config.num_processes >= 2
        # accelerate starts num_processes / num_machines per machine: it must divide evenly.
        assert config.num_processes % config.num_machines == 0


def validated(name: str, *extra: str):
    """The launch arguments after accelerate merged the config file in (what would be launched)."""
    args = launch_command_parser().parse_args(["--config_file", str(FOLDER / name), *extra, *TRAIN])
    args, _, _ = _validate_launch_command(args)
    return args


def test_single_gpu_runs_the_cli_module():
    args = validated("single_gpu.yaml")
    assert args.module and args.training_script == "dialoguellm.cli"
    assert args.training_script_args == ["train", "--config", "dialoguellm/profiles/paper.yaml"]
    assert not args.multi_gpu and not args.use_deepspeed and args.num_processes == 1


def test_ddp_takes_num_processes_from_the_command_line():
    assert validated("ddp.yaml", "--num_processes", "4").num_processes == 4
    args = validated("ddp.yaml")
    assert (
        args.multi_gpu and args.num_processes == load_config_from_file(str(FOLDER / "ddp.yaml")).num_processes
    )


def test_deepspeed_is_zero2_bf16_with_the_paper_clipping():
    args = validated("deepspeed_zero2.yaml", "--num_processes", "4")
    assert args.use_deepspeed and args.zero_stage == 2 and args.mixed_precision == "bf16"
    assert args.gradient_clipping == 1.0  # the paper's max_grad_norm (DeepSpeed clips inside its step)
    assert args.gradient_accumulation_steps is None  # taken from the training code, never set twice
    assert args.num_processes == 4


def test_multinode_placeholders_are_overridden_per_machine():
    config = load_config_from_file(str(FOLDER / "ddp_multinode.yaml"))
    assert config.num_machines >= 2 and config.main_process_port
    assert "REPLACE" in config.main_process_ip  # a placeholder that cannot be mistaken for a real address
    args = validated("ddp_multinode.yaml", "--machine_rank", "1", "--main_process_ip", "10.0.0.1")
    assert args.machine_rank == 1 and args.main_process_ip == "10.0.0.1"
    assert args.num_machines == config.num_machines and args.multi_gpu


def documented_launches() -> list[str]:
    """Every `accelerate launch ...` command in the README and docs/SCALING.md (continuations joined)."""
    commands = []
    for doc in (REPO / "README.md", REPO / "docs" / "SCALING.md"):
        text = doc.read_text(encoding="utf-8").replace("\\\n", " ")
        commands += re.findall(r"accelerate launch [^`\n]+", text)
    return commands


def test_documented_commands_are_valid_launches():
    commands = documented_launches()
    # 1, 4, 8 GPUs, ZeRO-2 and multi-node in docs/SCALING.md (the README links there)
    assert len(commands) >= 5
    for command in commands:
        # Placeholders such as <address of rank 0> or <0 or 1> get a concrete value.
        argv = shlex.split(re.sub(r"<[^>]*rank 0>", "10.0.0.1", re.sub(r"<0 or 1>", "1", command)))[2:]
        config_file = argv[argv.index("--config_file") + 1]
        assert (REPO / config_file).is_file(), command
        args = launch_command_parser().parse_args(
            [a if a != config_file else str(REPO / config_file) for a in argv]
        )
        args, _, _ = _validate_launch_command(args)
        assert args.training_script == "dialoguellm.cli" and args.module, command
        assert args.training_script_args[:3] == ["train", "--config", "paper"], command
        assert resolve_config_path(args.training_script_args[2]).is_file()  # the packaged paper profile
