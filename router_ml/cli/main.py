"""The ``router-ml`` command: one entry point, one sub-command per job.

    router-ml train | evaluate | label | report | serve | keys | score | data | tasks  [--help]

Each sub-command's module is imported only when it runs, so ``router-ml --help`` and
``router-ml score --help`` work on the core install. Outputs without an explicit path go to the
current directory (``./models/<name>``, ``./reports``), never into the installed package.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

# name -> (module:function, one-line help, installed by)
COMMANDS = {
    "train": ("router_ml.cli.train:train_main", "train a router (on a protocol or your own table)",
              "router_ml[train]"),
    "evaluate": ("router_ml.cli.evaluate:evaluate_main", "evaluate a saved router or a baseline",
                 "router_ml[train]"),
    "label": ("router_ml.cli.label:label_main", "label logged prompts with model outcomes",
              "router_ml[train]"),
    "report": ("router_ml.cli.monitor:report_main", "report routing decisions and drift",
               "router_ml[train]"),
    "serve": ("router_ml.cli.serve:serve_main", "OpenAI-compatible routing endpoint",
              "router_ml[serve]"),
    "keys": ("router_ml.cli.keys:keys_main", "client keys for serve --keys (keys new NAME)",
             "router_ml[serve]"),
    "score": ("router_ml.cli.score:score_main", "score a Parquet/CSV/JSONL file (or on Spark)",
              "router_ml[spark]"),
    "data": ("router_ml.cli.data:data_main", "download the public training data (data fetch)",
             "router_ml[train]"),
    "tasks": ("router_ml.cli.tasks:tasks_main", "evaluate task definitions on labelled prompts "
              "(tasks eval)", "router_ml[train]"),
}
# Sub-commands whose defaults are relative to where they run.
_ROOTED = {"train", "evaluate"}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: router-ml <command> [options]   (router-ml <command> --help for its options)",
             "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_, _) in COMMANDS.items()]
    return "\n".join(lines)


def _resolve(name: str):
    target, _, extra = COMMANDS[name]
    module_name, func = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:
            raise  # the module exists; one of its dependencies is missing (reported below)
        return None
    return getattr(module, func, None)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        from router_ml._version import __version__

        print(f"router-ml {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    try:
        fn = _resolve(name)
    except ModuleNotFoundError as e:
        print(f"error: router-ml {name} needs the package {e.name!r}, which is not installed; "
              f"install it with: pip install '{COMMANDS[name][2]}'", file=sys.stderr)
        return 2
    if fn is None:
        module = COMMANDS[name][0].split(":")[0]
        print(f"error: router-ml {name} is provided by {COMMANDS[name][0]}, and {module} is not "
              f"part of this router_ml installation; upgrade router_ml to a version that has it",
              file=sys.stderr)
        return 2
    import inspect

    accepted = inspect.signature(fn).parameters
    kwargs = {k: v for k, v in (("prog", f"router-ml {name}"),
                                ("root", Path.cwd() if name in _ROOTED else None))
              if k in accepted and v is not None}
    return int(fn(rest, **kwargs) or 0)


if __name__ == "__main__":
    sys.exit(main())
