"""Several processes, through accelerate and torch.distributed: no process management of our own.

A run is multi-process when a launcher (`accelerate launch`, `torchrun`, or our
`--num_processes N`, which hands off to `accelerate launch`) started it: WORLD_SIZE > 1.
Two things accelerate does not do for us:

- Without a GPU, `PartialState()` under a launcher is a quiet single process: every rank would
  train (or generate) alone. With `cpu=True` it joins the others over gloo, so a multi-process
  run on a machine without accelerators asks for the CPU backend (`needs_cpu_backend`).
- `accelerate launch` listens on a fixed port (29500): two concurrent runs would collide, so the
  launch we start picks a free one.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys

from .errors import ConfigError, UserError

logger = logging.getLogger("hf_encdec.distributed")

LAUNCH_KEYS = ("num_processes", "accelerate_config")


def launched_processes() -> int:
    """How many processes the launcher started (1 when run directly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def needs_cpu_backend() -> bool:
    if launched_processes() == 1:
        return False
    import torch

    return not (torch.accelerator.is_available() if hasattr(torch, "accelerator") else torch.cuda.is_available())


def join_cpu_processes() -> None:
    """Without GPUs, make TrainingArguments join the launched processes over gloo (see the module doc).

    Set before any TrainingArguments is built (config validation builds one): the first one sets up
    torch.distributed. The variable is the one TrainingArguments reads as `use_cpu`, so
    run_config.yaml stays free of this machine's lack of GPUs.
    """
    if needs_cpu_backend():
        os.environ["ACCELERATE_USE_CPU"] = "true"


def state():
    """accelerate's PartialState, joined with the other processes also on a machine without GPUs."""
    from accelerate import PartialState

    return PartialState(cpu=needs_cpu_backend())


def on_main(current, compute):
    """compute() on the main process; its result, or its user error, reaches every process."""
    if current.num_processes == 1:
        return compute()
    from accelerate.utils import broadcast_object_list

    box = [None, None]
    if current.is_main_process:
        try:
            box[0] = compute()
        except UserError as err:
            box[1] = err.one_line()
            broadcast_object_list(box)
            raise
    broadcast_object_list(box)
    if box[1] is not None:
        raise UserError(box[1])
    return box[0]


def gather_in_order(current, item) -> list:
    """Every process's `item`, in process order, on every process."""
    if current.num_processes == 1:
        return [item]
    from accelerate.utils import gather_object

    return gather_object([item])


def describe(current) -> str:
    backend = f", {current.backend}" if current.backend else ""
    return (f"{current.num_processes} process(es) ({current.distributed_type.value}{backend}), "
            f"this is process {current.process_index}")


def quiet_replicas(current) -> None:
    """Only the main process reports (data report, progress bars); the others log warnings and errors only."""
    if current.is_main_process:
        return
    import datasets

    logging.getLogger("hf_encdec").setLevel(logging.WARNING)
    datasets.disable_progress_bars()


def prepare_training(config):
    """Settings a multi-process run needs; the run's TrainingArguments, its world size logged."""
    training = config.training
    join_cpu_processes()
    if launched_processes() > 1:
        # Every trainable weight of our models reaches the loss (a pair's unused pooler is frozen:
        # warm_start.freeze_pooler), so DDP can skip its per-step search for unused parameters.
        training.setdefault("ddp_find_unused_parameters", False)
    # TrainingArguments set accelerate's shared state up: built once here, PartialState() is the run's.
    arguments = config.training_arguments()
    current = arguments.distributed_state
    quiet_replicas(current)
    if current.num_processes > 1 or launched_processes() > 1:
        logger.info("distributed: %s", describe(current))
    if current.num_processes != launched_processes():
        logger.warning("the launcher started %d processes but the run sees %d: each trains alone",
                       launched_processes(), current.num_processes)
    return arguments


def effective_batch(arguments) -> str:
    """The data report's batch line: what one optimizer step sees."""
    processes, accumulation = arguments.world_size, arguments.gradient_accumulation_steps
    max_tokens = getattr(arguments, "max_tokens", None)
    if max_tokens:  # token-budget batches: the example count varies with length (the padding line has it)
        return (f"batch: up to {max_tokens} padded tokens per device x {processes} process(es) x {accumulation} "
                f"accumulation step(s) = {max_tokens * processes * accumulation} tokens per optimizer step")
    per_device = arguments.per_device_train_batch_size
    return (f"batch: {per_device} per device x {processes} process(es) x {accumulation} accumulation step(s) = "
            f"{per_device * processes * accumulation} examples per optimizer step")


# ----------------------------------------------------------------------------- hf-encdec train --num_processes N


def pop_launch_options(overrides: dict) -> dict:
    """Take `num_processes` / `accelerate_config` out of the train flags: they are for the launcher."""
    options = {key: overrides.pop(key) for key in LAUNCH_KEYS if key in overrides}
    if "num_processes" in options:
        try:
            options["num_processes"] = int(options["num_processes"])
        except (TypeError, ValueError):
            options["num_processes"] = 0
        if options["num_processes"] < 1:
            raise ConfigError("must be a positive whole number of processes", key="num_processes",
                              hint="e.g. --num_processes 4 (one per GPU)")
    if options.get("accelerate_config") is not None:
        check_accelerate_config(str(options["accelerate_config"]))
    return options


def check_accelerate_config(path: str) -> None:
    """Read with accelerate's own loader; sharded set-ups refused up front on a machine without GPUs."""
    import torch
    import yaml
    from accelerate.commands.config.config_args import load_config_from_file

    if not os.path.isfile(path):
        raise ConfigError("accelerate config file not found", key="accelerate_config", path=path,
                          hint="see configs/accelerate/ or run `accelerate config`")
    try:
        loaded = load_config_from_file(path)
    except (yaml.YAMLError, ValueError, TypeError, KeyError, AttributeError) as err:
        first_line = str(err).splitlines()[0]
        raise ConfigError(f"not an accelerate config: {first_line}", key="accelerate_config", path=path,
                          hint="compare with the files in configs/accelerate/") from err
    kind = getattr(loaded.distributed_type, "value", str(loaded.distributed_type))
    if kind in ("FSDP", "DEEPSPEED") and not torch.cuda.is_available():
        raise ConfigError(f"{kind} needs GPUs and this machine has none", key="accelerate_config", path=path,
                          hint="use --num_processes N alone (DDP over gloo) on CPU")


def without_launch_options(args: list[str]) -> list[str]:
    """The train command line minus `--num_processes N` / `--accelerate_config F`: what each process runs."""
    kept, i = [], 0
    while i < len(args):
        key = args[i][2:].partition("=")[0] if args[i].startswith("--") else None
        if key in LAUNCH_KEYS:
            has_value = "=" not in args[i] and i + 1 < len(args) and not args[i + 1].startswith("--")
            i += 2 if has_value else 1
            continue
        kept.append(args[i])
        i += 1
    return kept


def wants_launch(options: dict) -> bool:
    """True when we should start the processes; under a launcher already, its processes are the run's."""
    if launched_processes() > 1:
        if options:
            logger.warning("already running as %d processes: --%s is left to the launcher", launched_processes(),
                           " / --".join(options))
        return False
    return options.get("num_processes", 1) > 1 or "accelerate_config" in options


def launch_command(options: dict, train_args: list[str]) -> list[str]:
    """`accelerate launch ... -m hf_encdec train ARGS`: our flags turned into the launcher's."""
    command = [sys.executable, "-m", "accelerate.commands.launch"]
    if "accelerate_config" in options:
        command += ["--config_file", str(options["accelerate_config"])]
    else:
        # --multi_gpu really starts N processes on any machine (gloo without GPUs); --cpu would start one.
        command += ["--num_machines", "1", "--dynamo_backend", "no", "--mixed_precision", "no"]
        if options.get("num_processes", 1) > 1:
            command.append("--multi_gpu")
    if "num_processes" in options:
        command += ["--num_processes", str(options["num_processes"])]
    command += ["--main_process_port", str(free_port()), "-m", "hf_encdec", "train", *train_args]
    return command


# Set for the processes we launch: where the first of them to hit a user error writes its one line.
ERROR_FILE_ENV = "HF_ENCDEC_ERROR_FILE"


def launch(options: dict, train_args: list[str]) -> int:
    """Run the launcher, passing its output through. A user error in the launched processes (bad data
    found while loading, say) ends as it does in one process: its one line, once, and exit code 2,
    instead of one line per rank, torch's ChildFailedError report and exit code 1."""
    import tempfile
    from pathlib import Path

    from . import console

    command = launch_command(options, train_args + console.verbosity_flags())
    logger.info("starting %s process(es) with accelerate launch: %s", options.get("num_processes", "the config's"),
                " ".join(command[1:]))
    # The processes write into our pipe: they draw bars only if our own stderr is a terminal.
    terminal = "1" if console.interactive() else "0"
    with tempfile.TemporaryDirectory(prefix="hf-encdec-launch-") as folder:
        error_file = Path(folder) / "error"
        process = subprocess.Popen(command, env={**os.environ, ERROR_FILE_ENV: str(error_file),
                                                 console.TERMINAL_ENV: terminal}, stderr=subprocess.PIPE)
        # Chunks, not lines: progress bars redraw with carriage returns.
        for chunk in iter(lambda: process.stderr.read1(1 << 16), b""):
            if not error_file.exists():  # after a user error, only the launcher's report of it follows
                sys.stderr.buffer.write(chunk)
                sys.stderr.flush()
        code = process.wait()
        if error_file.exists():
            print(error_file.read_text(encoding="utf-8").strip(), file=sys.stderr)
            return 2
        return code


def report_launched_error(line: str) -> bool:
    """In a process we launched: hand the error line to the launching command (the first rank's wins).
    False when not launched by us, so the caller prints it itself."""
    path = os.environ.get(ERROR_FILE_ENV)
    if not path or launched_processes() < 2:
        return False
    try:
        with open(path, "x", encoding="utf-8") as f:
            f.write(line)
    except FileExistsError:
        pass
    return True


def free_port() -> int:
    """A port no one listens on now: the OS picks it (a tiny race with other programs remains)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
