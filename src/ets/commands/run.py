"""``ets run``: search a dataset for one or several widths and write the run files."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from ets.config import ConfigError, SearchConfig


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
    p.add_argument("--select_method", help="softmax_costmodel (ETS), softmax (REBASE), beam_search, dvts, best_of_n")
    p.add_argument("--prompt_format", help="prompt format (default: the policy_model_type's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set lambdas=1.5 (repeatable)")
    p.add_argument("--num_samples", type=int, help="only the first N problems")
    p.add_argument("--policy_host", nargs="+", help="policy server URL(s) speaking /v1/completions; none: the built-in CPU model")
    p.add_argument("--reward_host", nargs="+", help="PRM server URL(s); none: the built-in CPU judge")
    p.add_argument("--reward_api", choices=("sglang", "sglang-generate", "vllm", "vllm-pooling", "ets"),
                   help="PRM protocol (default: asked of the server, else from reward_model_type)")
    p.add_argument("--policy_model", help="served model name to check for (HTTP), or a GGUF path (CPU)")
    p.add_argument("--reward_model", help="PRM model name to check for (HTTP), or a GGUF path (CPU judge)")
    p.add_argument("--embed_device", help="device of the sentence embedder: a GPU index (as the reference) or cpu, cuda:1, ...")
    p.add_argument("--embed_model", help="sentence-transformers model for the diversity term (default: built-in all-MiniLM-L6-v2)")
    p.add_argument("--scripted", action="store_true",
                   help="use a made-up scripted policy and PRM (no model at all): for trying the machinery")
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="spread the problems over a Ray cluster: alone, a local cluster; 'auto' or ray://HOST:PORT to join one")
    p.add_argument("--ray_workers", type=int, help="Ray workers (default: the cluster's CPU count, at most the problems)")
    p.add_argument("--overwrite", action="store_true", help="search every problem again instead of resuming from checkpoints")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=main)


def parse_overrides(items: list[str]) -> dict:
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        out[key.strip()] = yaml.safe_load(value)
    return out


def resolve_config(args: argparse.Namespace) -> SearchConfig:
    config = SearchConfig.from_yaml(args.config) if args.config else None
    changes = parse_overrides(args.overrides)
    for key in ("select_method", "prompt_format"):
        if getattr(args, key) is not None:
            changes[key] = getattr(args, key)
    if args.embed_model:
        changes["embed_model"] = args.embed_model
    if config is None:
        # no YAML: our defaults, with the prompt format the chosen backend speaks
        if "prompt_format" not in changes and "policy_model_type" not in changes and not args.policy_host:
            from ets.backends.factory import default_prompt_format

            changes["prompt_format"] = default_prompt_format(scripted=args.scripted)
        return SearchConfig.from_dict(changes, source="command line")
    return SearchConfig.from_dict({**config.to_dict(), **changes}, source="command line")


def output_location(args: argparse.Namespace, config: SearchConfig) -> tuple[Path, str]:
    if args.output_path:
        path = Path(args.output_path)
        if path.is_dir() or path.suffix != ".json":  # a directory: the run directory itself
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


def main(args: argparse.Namespace) -> int:
    from ets.backends.base import BackendError
    from ets.backends.factory import BackendSpec, build_backends
    from ets.datasets import DatasetError, load_problems
    from ets.runner import run_problems, sweep_dirs
    from ets.search import SearchError

    log = (lambda message: None) if args.quiet else (lambda message: print(message, file=sys.stderr, flush=True))
    try:
        config = resolve_config(args)
        widths = args.width or [config.width]
        for w in widths:
            if w < 1:
                raise ConfigError(f"--width: every width must be >= 1, got {w}")
        if args.num_samples is not None and args.num_samples < 1:
            raise ConfigError(f"--num_samples: must be >= 1, got {args.num_samples}")
        output_dir, answers_name = output_location(args, config)
        problems = load_problems(args.input_path, args.num_samples)  # checked before any model loads
        spec = BackendSpec.from_args(args)
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"ets run: cannot write the run directory: {exc}", file=sys.stderr)
        return 2
    except (ConfigError, DatasetError) as exc:
        print(f"ets run: {exc}", file=sys.stderr)
        return 2
    if args.scripted:
        log("note: --scripted: a made-up policy and PRM stand in for the models; the answers mean nothing")
    runs = list(zip(widths, sweep_dirs(output_dir, widths)))
    resume = not args.overwrite

    def on_ray() -> None:
        # each Ray worker builds its own backends from the spec; the driver loads no model
        from ets.distributed import run_problems_ray

        address = None if args.ray == "local" else args.ray
        for width, run_dir in runs:
            summary = run_problems_ray(problems, config.replace(width=width), spec, run_dir, address=address,
                                       num_workers=args.ray_workers, answers_name=answers_name, resume=resume,
                                       progress=log)
            report_run(summary, answers_name)

    async def in_process() -> None:
        backends = build_backends(spec, config, log=log)
        try:
            # servers that do not answer, or serve another model, stop the run before any problem starts
            for backend in (backends.policy, backends.reward):
                if hasattr(backend, "start"):
                    await backend.start()
            for width, run_dir in runs:
                summary = await run_problems(problems, config.replace(width=width), backends, run_dir,
                                             answers_name=answers_name, resume=resume, progress=log)
                report_run(summary, answers_name)
        finally:
            if spec.policy_hosts or spec.reward_hosts:
                from ets.backends.http import aclose_all

                await aclose_all()

    try:
        if args.ray is not None:
            on_ray()
        else:
            asyncio.run(in_process())
    except (ConfigError, ImportError) as exc:
        print(f"ets run: {exc}", file=sys.stderr)
        return 2
    except (SearchError, BackendError) as exc:
        saved = any((run_dir / "trees").glob("q*.json") for _, run_dir in runs)
        note = "\n(finished problems are checkpointed in the run directory; run again to resume)" if saved else ""
        print(f"ets run: {exc}{note}", file=sys.stderr)
        return 1
    return 0
