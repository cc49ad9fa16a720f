"""``pretrainctl <command> [Hydra overrides]``: one Hydra app per command, with friendly errors.

Before Hydra runs, the CLI (1) accepts ``+group=option`` for groups that already have a default
(Hydra alone rejects it), (2) checks every group choice against the files in conf/, and (3) composes
the config once so a typo in a key is one clear sentence with exit code 2, not a traceback.
"""

from __future__ import annotations

import functools
import os
import re
import secrets
import sys
import time
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path

from pretrainctl.errors import UserError

CONF = Path(str(files("pretrainctl_conf")))
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and not p.name.startswith("_"))
COMMANDS: dict[str, tuple[str, str]] = {
    # command: (module:function taking the composed config, one-line description)
    "train": ("pretrainctl.train:hydra_task", "train a model; leaves a run directory"),
    "eval": ("pretrainctl.evaluate.run_eval:hydra_task", "validation loss and bits per byte of a checkpoint"),
    "generate": ("pretrainctl.evaluate.generate:hydra_task", "sample text from a checkpoint"),
    # `pretrainctl <noun> <verb>` runs command <noun>_<verb> (primary config conf/<noun>_<verb>.yaml)
    "scaling_plan": ("pretrainctl.scaling.plan_cmd:hydra_task", "candidate model sizes for a FLOP budget"),
    "scaling_sweep": ("pretrainctl.scaling.sweep_cmd:hydra_task", "IsoFLOP grid of train runs"),
    "scaling_fit": ("pretrainctl.scaling.fit_cmd:hydra_task", "fit scaling laws to finished runs"),
    "data_prepare": ("pretrainctl.data.prepare_cmd:hydra_task", "curate a corpus; report; token shards"),
    "data_train_scorer": ("pretrainctl.data.scorer_cmd:hydra_task", "fit a quality scorer on good/bad text"),
    "checkpoint_soup": ("pretrainctl.optim.averaging:hydra_task", "average a run's last k step checkpoints"),
    "tokenizer_train": ("pretrainctl.tokenizer.train_cmd:hydra_task", "train a tokenizer into a directory"),
    "tokenizer_eval": ("pretrainctl.tokenizer.eval_cmd:hydra_task", "compare tokenizers on text"),
}


def _nouns() -> set[str]:
    """Command words that take a verb: ``scaling`` for scaling_plan, scaling_sweep, ..."""
    return {c.split("_", 1)[0] for c in COMMANDS if "_" in c}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def fail(message: str) -> None:
    print(f"pretrainctl: error: {message}", file=sys.stderr)
    sys.exit(2)


def user_errors_exit_2(fn: Callable) -> Callable:
    """Wrap a Hydra task so a UserError prints one sentence and exits with code 2."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            fail(str(exc))

    return wrapped


def normalize(args: list[str]) -> list[str]:
    """``+arch=x`` -> ``arch=x`` for config groups (they all have a default or a null default)."""
    out = []
    for arg in args:
        m = re.match(r"^\+([A-Za-z_]\w*)=(.*)$", arg)
        out.append(f"{m.group(1)}={m.group(2)}" if m and m.group(1) in GROUPS else arg)
    return out


def check_choices(args: list[str]) -> None:
    for arg in args:
        m = re.match(r"^([A-Za-z_]\w*)=(.*)$", arg)
        if not m or m.group(1) not in GROUPS:
            continue
        group, value = m.groups()
        for choice in re.sub(r"^(choice|range)\((.*)\)$", r"\2", value).split(","):
            choice = choice.strip()
            if choice and choice != "null" and choice not in options(group):
                fail(f"unknown {group} option {choice!r}; choose one of: {', '.join(options(group))}.")


def check_composes(command: str, args: list[str]) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = [a for a in args if not a.startswith("hydra.")]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            try:
                compose(config_name=command, overrides=overrides)
            except (HydraException, OmegaConfBaseException) as exc:
                text = str(exc).strip() or str(exc.__cause__ or type(exc).__name__).strip()
                fail(_explain(text.splitlines()[0], command, overrides, compose))
    finally:
        GlobalHydra.instance().clear()


def _explain(message: str, command: str, overrides: list[str], compose: Callable) -> str:
    """For an unknown key, name the keys that do exist at that level."""
    from omegaconf import OmegaConf

    m = re.match(r"Could not override '([\w.]+)'", message)
    if not m:
        return f"{message} (see `pretrainctl {command} --cfg job` for the keys)"
    key = m.group(1)
    parent, _, leaf = key.rpartition(".")
    rest = [o for o in overrides if not re.match(rf"^[+~]*{re.escape(key)}=", o)]
    try:
        cfg = compose(config_name=command, overrides=rest)
        node = OmegaConf.select(cfg, parent) if parent else cfg
        keys = ", ".join(k for k in node if k != "_target_")
    except Exception:  # the other overrides are broken too: fall back to the plain message
        return message
    return f"unknown setting {key!r}: {parent or 'the top level'} has {keys}."


def print_help() -> None:
    print("usage: pretrainctl <command> [group=option ...] [key=value ...] [--multirun] [hydra flags]\n")
    print("commands:")
    for name, (_, text) in COMMANDS.items():
        print(f"  {name.replace('_', ' ', 1):<18} {text}")
    print("\nconfig groups (pretrainctl train <group>=<option>; `+group=option` works too):")
    for group in GROUPS:
        print(f"  {group:<11} {', '.join(options(group))}")
    print(
        "\nexamples:\n"
        "  pretrainctl train                                   # default run on the embedded stdlib corpus\n"
        "  pretrainctl train +arch=llama_124m schedule=wsd trainer.max_steps=100\n"
        "  pretrainctl train --multirun optim.lr=1e-3,3e-3     # a sweep, ending with a table of results\n"
        "  pretrainctl train resume=runs/<run>                 # continue an interrupted run\n"
        "  pretrainctl eval run=runs/<run>    pretrainctl generate run=runs/<run> \"prompt='def '\"\n"
        "  pretrainctl train --cfg job                         # print the composed config\n"
        "\nRun directories go under $PRETRAINCTL_RUNS (default ./runs); caches under $PRETRAINCTL_CACHE."
    )


def _command_from_completion() -> str | None:
    """Shell completion calls ``pretrainctl -sc query=bash`` with the typed line in COMP_LINE; Hydra
    completes overrides, so the command word is taken out of the line it sees."""
    line = os.environ.get("COMP_LINE", "")
    words = line.split()
    n = 2 if len(words) > 2 and words[1] in _nouns() else 1  # `scaling plan` is one command
    command = "_".join(words[1 : 1 + n])
    if len(words) < 1 + n or command not in COMMANDS or (len(words) == 1 + n and not line.endswith(" ")):
        return None
    os.environ["COMP_LINE"] = line.replace(" " + " ".join(words[1 : 1 + n]), "", 1)
    return command


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    relaunched = os.environ.get("PRETRAINCTL_COMMAND")
    if relaunched and os.environ.get("LOCAL_RANK", "0") != "0" and (not args or args[0] not in COMMANDS):
        # Lightning's DDP launcher re-runs sys.argv (which Hydra needs without the command) per rank.
        args = [relaunched, *args]
    if args and args[0] in ("-sc", "--shell-completion"):
        command = _command_from_completion() or "train"
    elif not args or args[0] in ("-h", "--help", "help"):
        print_help()
        return
    elif args[0] in _nouns():  # `pretrainctl scaling plan ...` is the command scaling_plan
        noun = args[0]
        verbs = [c.removeprefix(f"{noun}_") for c in COMMANDS if c.startswith(f"{noun}_")]
        if len(args) < 2 or f"{noun}_{args[1]}" not in COMMANDS:
            fail(f"`pretrainctl {noun}` needs a verb; choose one of: {', '.join(verbs)}.")
        command, args = f"{noun}_{args[1]}", args[2:]
    else:
        command, args = args[0], args[1:]
    if command not in COMMANDS:
        fail(f"unknown command {command!r}; choose one of: {', '.join(COMMANDS)}.")
    args = normalize(args)
    check_choices(args)
    if not any(a.startswith("-") for a in args):  # Hydra flags (--cfg job, -m, ...) take over
        check_composes(command, args)
    resume = next((a.split("=", 1)[1] for a in args if a.startswith("resume=")), None)
    if resume and not any(a.startswith("hydra.run.dir=") for a in args):
        args.append(f"hydra.run.dir={resume}")  # a resumed run keeps writing to its own directory
    os.environ.setdefault("PRETRAINCTL_STAMP", f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}")

    import hydra

    module_name, fn_name = COMMANDS[command][0].split(":")
    task = getattr(__import__(module_name, fromlist=[fn_name]), fn_name)
    os.environ["PRETRAINCTL_COMMAND"] = command
    sys.argv = [sys.argv[0], *args]
    hydra.main(config_path=str(CONF), config_name=command, version_base="1.3")(user_errors_exit_2(task))()


if __name__ == "__main__":
    main()
