"""``ets run``: search a dataset for one or several widths (or values of a key) and write the run files.

Everything that can be checked without a model is checked before any loads:
the config, the dataset, the server URLs, prompts that cannot fit ``max_tokens``
(by a word count, a lower bound on any tokenizer's count), and each run
directory (writable, and not another run's). Exit status: 2 for input refused
before any work, 1 for a failure during the run (the message says how many
problems are checkpointed), 130 for Ctrl-C, 143 for SIGTERM (``kill``), in
set-up as during the run.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ets.backends.base import BackendError
from ets.backends.factory import BackendSpec, build_backends, default_prompt_format, needs_embedder
from ets.cli import EXIT_INTERRUPTED, EXIT_TERMINATED, CommandError, Terminated
from ets.config import ConfigError, SearchConfig, builtin_policy_defaults, load_yaml
from ets.datasets import DatasetError, Problem, load_problems
from ets.distributed import run_problems_ray
from ets.files import NAME_MAX, overlong_part
from ets.models import DEFAULT_POLICY
from ets.progress import Progress, for_stream
from ets.runner import RunDirError, check_writable, checkpoint_files, foreign_run, run_problems, sweep_dirs
from ets.search import SearchError, prompt_overflow, prompt_text

# The HTTP backends (ets.backends.http, which loads httpx) are imported only by runs against model servers.

# The widest run taken: 16 times the reference's widest (256). ETS's diversity term compares every pair
# of a step's candidates (about 300 MB and 10 s a problem at 4096, scripted), which grows with the
# square of the width: a width far beyond this would fill memory before anything is searched.
MAX_WIDTH = 4096
# a Hugging Face model id (NAME or OWNER/NAME), which sentence-transformers fetches; anything else is a folder
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "run",
        help="run the tree search over a dataset",
        description="Run ETS (or a baseline) over a dataset. Accepts the reference's flags "
        "(--input_path --output_path --parameter_path --policy_host --reward_host --num_samples --embed_device).",
    )
    p.add_argument("--input_path", required=True,
                   help="dataset: a .jsonl/.json/.parquet file, a built-in set (gsm8k, math500, svamp, asdiv, mawps) or a hub name")
    p.add_argument("--output_path", help="where answers.json goes (its directory holds the run); default: STORE_PATH/answers.json")
    p.add_argument("--parameter_path", "--config", dest="config", help="YAML file of hyperparameters (the reference's keys)")
    p.add_argument("--width", type=int, nargs="+", help="one width, or several to sweep (each in OUTPUT_DIR/width_W/)")
    p.add_argument("--sweep", metavar="KEY=V1,V2,...",
                   help="run once for each value of a config key, e.g. --sweep lambdac=0.5,1,2,4 (each in "
                        "OUTPUT_DIR/KEY=V/; with several widths OUTPUT_DIR/KEY=V,width=W/)")
    p.add_argument("--select_method", help="softmax_costmodel (ETS), softmax (REBASE), beam_search, dvts, best_of_n, particle_filtering")
    p.add_argument("--prompt_format", help="prompt format (default: the policy_model_type's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set lambdas=1.5 (repeatable)")
    p.add_argument("--num_samples", type=int, help="only the first N problems")
    p.add_argument("--policy_host", nargs="+", help="policy server URL(s) speaking /v1/completions; none: the built-in CPU model")
    p.add_argument("--reward_host", nargs="+", help="PRM server URL(s); none: an in-process PRM (reward_model_type: arithmetic, the default, or judge)")
    p.add_argument("--reward_api", choices=("sglang", "sglang-generate", "vllm", "vllm-pooling", "ets"),
                   help="PRM protocol (default: asked of the server, else from reward_model_type)")
    p.add_argument("--policy_model", help="served model name to check for (HTTP), or (CPU) a built-in policy "
                   "(smollm2-135m, the default; qwen2.5-coder-0.5b) or a GGUF path; as the config key policy_model")
    p.add_argument("--reward_model", help="PRM model name to check for (HTTP), or a PRM GGUF path read in-process")
    p.add_argument("--embed_device", help="device of the sentence embedder: a GPU index (as the reference) or cpu, cuda:1, ...")
    p.add_argument("--embed_model", help="sentence-transformers model for the diversity term (default: built-in all-MiniLM-L6-v2)")
    p.add_argument("--request_timeout", type=float, metavar="SECONDS",
                   help="seconds a model server has to answer one request before the run stops with an error "
                        "naming it (default 120); the start check gives each server at most 10")
    p.add_argument("--scripted", action="store_true",
                   help="use a made-up scripted policy and PRM (no model at all): for trying the machinery")
    p.add_argument("--scripted_delay", type=float, default=0.0, metavar="SECONDS",
                   help="with --scripted: each policy call waits this long, as a slow model would (to try interruptions)")
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="spread the problems over a Ray cluster: alone, a local cluster; 'auto' or ray://HOST:PORT to join one")
    p.add_argument("--ray_workers", type=int, help="Ray workers (default: the cluster's CPU count, at most the problems)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run in the output directory (its checkpoints too) instead of resuming it")
    p.add_argument("--quiet", action="store_true",
                   help="no progress on stderr (otherwise: a bar on a terminal, plain lines in a log or pipe)")
    p.set_defaults(func=main)


def parse_overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        out[key.strip()] = load_yaml(value, f"--set {item}")
    return out


def resolve_config(args: argparse.Namespace) -> tuple[SearchConfig, dict]:
    """The run's config, and the built-in policy's defaults it took: keys the config file and flags set win;
    on the built-in CPU policy its own defaults fill the rest (config.builtin_policy_defaults), against
    servers the reference's defaults stay."""
    chosen = SearchConfig.read_yaml(args.config) if args.config else {}
    changes = parse_overrides(args.overrides)
    for key in ("select_method", "prompt_format", "embed_model", "policy_model"):
        if getattr(args, key) is not None:
            changes[key] = getattr(args, key)
    chosen = {**chosen, **changes}
    defaults = {}
    if args.scripted:
        if "prompt_format" not in chosen and "policy_model_type" not in chosen:
            defaults = {"prompt_format": default_prompt_format(scripted=True)}
    elif not args.policy_host:
        defaults = builtin_policy_defaults(chosen, reward_server=bool(args.reward_host))
    config = SearchConfig.from_dict({**defaults, **chosen}, source="command line")
    return config, ({} if args.scripted else defaults)


def defaults_line(config: SearchConfig, defaults: dict) -> str:
    """The start line of a run on a built-in policy that took its defaults."""
    said = ", ".join(f"{key} {str(value).lower() if isinstance(value, bool) else value}"
                     for key, value in defaults.items())
    return (f"policy {config.policy_model or DEFAULT_POLICY} (built-in, CPU) with its defaults for the keys "
            f"left unset: {said} (--set KEY=VALUE or a --config file changes any)")


def output_location(args: argparse.Namespace, config: SearchConfig) -> tuple[Path, str]:
    if args.output_path:
        path = Path(args.output_path)
        # answers.JSON is a file name too: suffixes are compared as the file systems of Windows and macOS do
        if path.is_dir() or path.suffix.lower() != ".json":  # a directory: the run directory itself
            return path, "answers.json"
        return path.parent, path.name
    if config.store_path:
        return Path(config.store_path), "answers.json"
    raise ConfigError("no output location: pass --output_path OUT/answers.json (or set store_path in the config)")


def report_run(summary, answers_name: str) -> None:
    s = summary.stats
    print(f"{summary.config.select_method} width {summary.config.width}: {len(summary.answers)} problems "
          f"-> {summary.run_dir / answers_name}")
    print(f"  KV cache size {s.kv_cache_size}, model calls {s.model_calls}, tokens generated {s.tokens_generated}, "
          f"prompt tokens computed {s.prompt_tokens_computed} / reused {s.prompt_tokens_reused}, time {s.time:.1f}s")


def check_flags(args: argparse.Namespace, widths: list[int]) -> None:
    for w in widths:
        if w < 1:
            raise ConfigError(f"--width: every width must be >= 1, got {w}")
        if w > MAX_WIDTH:
            raise ConfigError(f"width {w}: at most {MAX_WIDTH} (16 times the reference's widest, 256): ETS's diversity "
                              "term compares every pair of a step's candidates, about 300 MB a problem at 4096 and "
                              "four times that at each doubling")
    if args.ray_workers is not None:
        if args.ray is None:  # refused before Ray starts: it would otherwise be ignored without a word
            raise ConfigError("--ray_workers: only a --ray run has workers; add --ray (a local cluster) "
                              "or drop --ray_workers")
        if args.ray_workers < 1:
            raise ConfigError(f"--ray_workers: must be >= 1, got {args.ray_workers}")
    if args.num_samples is not None and args.num_samples < 1:
        raise ConfigError(f"--num_samples: must be >= 1, got {args.num_samples}")
    if args.request_timeout is not None:
        if not (math.isfinite(args.request_timeout) and args.request_timeout > 0):
            raise ConfigError(f"--request_timeout: must be a number of seconds > 0, got {args.request_timeout}")
        if not (args.policy_host or args.reward_host):
            raise ConfigError("--request_timeout: only model servers (--policy_host / --reward_host) have one")
    if args.scripted_delay:
        if not args.scripted:
            raise ConfigError("--scripted_delay: only the --scripted policy has one")
        if not (math.isfinite(args.scripted_delay) and args.scripted_delay >= 0):
            raise ConfigError(f"--scripted_delay: must be a number of seconds >= 0, got {args.scripted_delay}")
    for flag, hosts in (("--policy_host", args.policy_host), ("--reward_host", args.reward_host)):
        if hosts is not None:
            from ets.backends.http.transport import split_hosts  # httpx: see the top

            try:
                split_hosts(hosts)
            except ValueError as exc:
                raise ConfigError(f"{flag}: {exc}") from None


def _abbreviated(name: str) -> str:
    return name if len(name) <= 40 else f"{name[:20]}…{name[-8:]} ({len(os.fsencode(name))} bytes)"


def check_path_names(given: list[tuple[str, object]]) -> None:
    """A path with a name longer than a file system takes is refused naming it (the file system's
    own error, ENAMETOOLONG, would come from wherever the path is first looked at)."""
    for flag, value in given:
        if not isinstance(value, str):
            continue
        if overlong_part(value) is not None:
            shown = "/".join(_abbreviated(part) for part in value.split("/"))
            raise ConfigError(f"{flag} {shown}: a name in it is longer than the {NAME_MAX} bytes a file system "
                              "takes for one; shorten it")


def check_embed_model(config: SearchConfig, given: bool) -> None:
    """An embedder folder that is not there is refused before any model loads (sentence-transformers
    would take it for a Hugging Face id and fail only then). Checked when the run uses the embedder,
    or the flag names it."""
    name = config.embed_model
    if not name or not (given or needs_embedder(config)):
        return
    flag = "--embed_model" if given else "embed_model"
    path = Path(name).expanduser()
    if path.is_dir():
        return
    if path.exists():
        raise ConfigError(f"{flag} {name}: a file; expected a sentence-transformers model folder "
                          "or a Hugging Face id such as sentence-transformers/all-MiniLM-L6-v2")
    if HUB_ID.fullmatch(name):
        return  # a model on the hub: whether it exists is known only when it loads
    raise ConfigError(f"{flag} {name}: no such folder; expected a sentence-transformers model folder "
                      "or a Hugging Face id such as sentence-transformers/all-MiniLM-L6-v2")


def check_budgets(problems, config: SearchConfig) -> None:
    """Token budgets that make a search impossible, refused before any model loads.

    A step budget larger than a trajectory's whole budget (the library takes it, as
    the reference does, but it is always a mistake in a run), and a prompt with more
    words than max_tokens: every tokenizer we serve splits at spaces, so a word is at
    least one token. The policy's exact count is checked again before the search starts."""
    if config.max_step_tokens > config.max_tokens:
        raise ConfigError(
            f"max_step_tokens ({config.max_step_tokens}) is larger than max_tokens ({config.max_tokens}), the budget "
            "of a whole trajectory with its prompt: lower max_step_tokens or raise max_tokens")
    for problem in problems:
        why = prompt_overflow(config, len(prompt_text(config, problem.question).split()),
                              problem.label, counted_how="counting its words")
        if why:
            raise ConfigError(why)


def checkpointed(runs: list[tuple[SearchConfig, Path]], overwrite: bool) -> str:
    """How many problems are checkpointed and how to resume ('' when none is): the end of a stopped run's line."""
    saved = sum(len(checkpoint_files(run_dir / "trees")) for _, run_dir in runs)
    if not saved:
        return ""
    where = runs[0][1] if len(runs) == 1 else runs[0][1].parent
    again = "run the same command without --overwrite" if overwrite else "run the same command again"
    return f"; {saved} finished problem(s) are checkpointed in {where}: {again} to resume"


@dataclass
class RunPlan:
    """What ``ets run`` is asked to do, every part checked before any model loads."""

    config: SearchConfig
    problems: list[Problem]
    spec: BackendSpec
    runs: list[tuple[SearchConfig, Path]]  # (the run's config, its directory), in the order they run
    answers_name: str
    resume: bool
    model_defaults: dict  # the built-in policy's defaults the config took (resolve_config)


def plan_runs(args: argparse.Namespace) -> RunPlan:
    """The config, the dataset, the prompts' budgets, the backends' flags and each run directory,
    checked; raises ConfigError, DatasetError or RunDirError."""
    check_path_names([("--input_path", args.input_path), ("--output_path", args.output_path),
                      ("--config", args.config), ("--reward_model", args.reward_model)])
    config, model_defaults = resolve_config(args)
    widths = args.width or [config.width]
    check_flags(args, widths)
    check_path_names([("store_path", config.store_path), ("embed_model", config.embed_model),
                      ("policy_model", config.policy_model)])
    check_embed_model(config, given=args.embed_model is not None)
    output_dir, answers_name = output_location(args, config)
    problems = load_problems(args.input_path, args.num_samples)
    check_budgets(problems, config)
    spec = BackendSpec.from_args(args)
    runs = planned_runs(config, widths, parse_sweep(args.sweep, config), output_dir)
    dataset = Path(args.input_path)
    for run_config, run_dir in runs:
        if dataset.is_file() and dataset.resolve() == (run_dir / answers_name).resolve():
            raise RunDirError(f"--output_path {run_dir / answers_name} is the dataset itself; choose another")
        if not args.overwrite:
            why = foreign_run(run_dir, problems, run_config, answers_name)
            if why:
                raise RunDirError(why)
        check_writable(run_dir, answers_name)
    return RunPlan(config, problems, spec, runs, answers_name, resume=not args.overwrite, model_defaults=model_defaults)


# keys a --sweep cannot vary: the backends are built once for all the runs, and width has --width
UNSWEPT_KEYS = ("width", "store_path", "policy_model", "policy_weights", "reward_model_type", "embed_model",
                "prompt_format", "policy_model_type")


def parse_sweep(text: str | None, config: SearchConfig) -> tuple[str, list[tuple[str, object]]] | None:
    """``--sweep KEY=V1,V2``: the key and its values, each as written and as read (YAML, as --set reads it),
    each checked as a value of the config."""
    if text is None:
        return None
    key, sep, values = text.partition("=")
    key = key.strip()
    written = [v.strip() for v in values.split(",")]
    if not sep or not key or not all(written):
        raise ConfigError(f"--sweep {text!r}: expected KEY=V1,V2,... such as lambdac=0.5,1,2,4")
    if key in UNSWEPT_KEYS:
        hint = "use --width W1 W2 ..." if key == "width" else "the models are built once for every run: one run each"
        raise ConfigError(f"--sweep {key}: not a key a sweep can vary ({hint})")
    if len(set(written)) != len(written):
        raise ConfigError(f"--sweep {text!r}: a value is given twice")
    read = [load_yaml(v, f"--sweep {key}={v}") for v in written]
    for value in read:
        SearchConfig.from_dict({**config.to_dict(), key: value}, source=f"--sweep {key}")
    return key, list(zip(written, read))


def planned_runs(config: SearchConfig, widths: list[int], sweep, output_dir: Path) -> list[tuple[SearchConfig, Path]]:
    """Each run's config and directory: a run per width (``width_W/`` when several), times a run per swept
    value (``KEY=V/``, or ``KEY=V,width=W/`` with several widths)."""
    if sweep is None:
        return [(config.replace(width=w), d) for w, d in zip(widths, sweep_dirs(output_dir, widths))]
    key, values = sweep
    return [(config.replace(width=w, **{key: value}),
             output_dir / (f"{key}={written}" + (f",width={w}" if len(widths) > 1 else "")))
            for written, value in values for w in widths]


def backend_config(plan: RunPlan) -> SearchConfig:
    """The config the backends are built from: a run's that needs the embedder, if any does (a lambdas sweep)."""
    return next((c for c, _ in plan.runs if needs_embedder(c)), plan.config)


def run_on_ray(plan: RunPlan, address: str | None, num_workers: int | None, progress: Progress) -> None:
    """Each Ray worker builds its own backends from the spec; the driver loads no model."""
    for run_config, run_dir in plan.runs:
        summary = run_problems_ray(plan.problems, run_config, plan.spec, run_dir,
                                   address=address, num_workers=num_workers, answers_name=plan.answers_name,
                                   resume=plan.resume, progress=progress)
        report_run(summary, plan.answers_name)


def cancel_on_sigterm(task: asyncio.Task) -> Callable[[], None]:
    """`kill PID` (SIGTERM) stops the run as Ctrl-C does under asyncio.run: the first cancels ``task``
    (searches in flight cancelled, checkpoints whole) when the event loop next has control; a second,
    for a loop held up by work that does not yield (a model loading), raises Terminated at once.
    Returns what puts the earlier handler back."""
    loop, received = asyncio.get_running_loop(), []

    def on_sigterm(signum, frame) -> None:
        received.append(signum)
        if len(received) == 1 and not task.done():
            task.cancel()
            loop.call_soon_threadsafe(lambda: None)  # wake the loop if it waits in select()
            return
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread: signals are not ours to handle
        return lambda: None
    return lambda: signal.signal(signal.SIGTERM, previous)


async def run_in_process(plan: RunPlan, progress: Progress) -> None:
    restore = cancel_on_sigterm(asyncio.current_task())
    try:
        backends = build_backends(plan.spec, backend_config(plan), log=progress.message)
        try:
            await backends.start()  # servers that do not answer, or serve another model, stop the run here
            for run_config, run_dir in plan.runs:
                summary = await run_problems(plan.problems, run_config, backends, run_dir,
                                             answers_name=plan.answers_name, resume=plan.resume, progress=progress)
                report_run(summary, plan.answers_name)  # the run's bar is closed by now: these lines go below it
        finally:
            await backends.aclose()
    finally:
        restore()


def main(args: argparse.Namespace) -> int:
    progress = for_stream(sys.stderr, quiet=args.quiet)  # a bar on a terminal, plain lines elsewhere
    log = progress.message
    try:
        plan = plan_runs(args)
    except (ConfigError, DatasetError, RunDirError) as exc:
        raise CommandError(str(exc), 2) from exc
    except OSError as exc:  # a path the checks above did not foresee (too long, unreadable, ...): name it
        raise CommandError(f"{exc.filename or 'a path of the run'}: {exc.strerror or exc}; "
                           "check --input_path, --output_path and --config", 2) from exc
    if plan.model_defaults:
        log(defaults_line(plan.config, plan.model_defaults))
    if args.scripted:
        log("note: --scripted: a made-up policy and PRM stand in for the models; the answers mean nothing")
    runs = plan.runs
    try:
        if args.ray is not None:
            run_on_ray(plan, None if args.ray == "local" else args.ray, args.ray_workers, progress)
        else:
            asyncio.run(run_in_process(plan, progress))
    except (KeyboardInterrupt, asyncio.CancelledError, Terminated) as exc:  # Ctrl-C, SIGTERM: searches cancelled
        saved = checkpointed(runs, args.overwrite) or "; no problem had finished: run the same command to start again"
        if isinstance(exc, KeyboardInterrupt):
            raise CommandError(f"interrupted{saved}", EXIT_INTERRUPTED) from exc
        raise CommandError(f"terminated{saved}", EXIT_TERMINATED) from exc
    except (ConfigError, ImportError, RunDirError) as exc:
        raise CommandError(str(exc), 2) from exc
    except (SearchError, BackendError) as exc:
        hint = " (a slow server: raise --request_timeout)" if getattr(exc, "details", {}).get("timed_out") else ""
        raise CommandError(f"{exc}{hint}{checkpointed(runs, args.overwrite)}", 1) from exc
    except OSError as exc:  # a disk that fills up, a run directory removed under the run
        raise CommandError(f"cannot write {exc.filename or 'the run directory'} ({exc.strerror})"
                           f"{checkpointed(runs, args.overwrite)}", 1) from exc
    return 0
