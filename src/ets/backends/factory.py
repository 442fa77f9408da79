"""Builds the policy, reward and embedder a run asks for, from its flags and config.

No ``--policy_host``: the built-in CPU models (llama.cpp in-process).
``--policy_host`` / ``--reward_host``: model servers over HTTP.
``--scripted``: a made-up policy and PRM, for trying the machinery without a model.
"""

from __future__ import annotations

import argparse
from typing import Callable

from ets.config import ConfigError, SearchConfig
from ets.runner import Backends


def default_prompt_format(scripted: bool) -> str:
    if scripted:
        return "raw"
    from ets.backends.llamacpp import DEFAULT_FORMAT

    return DEFAULT_FORMAT


def needs_embedder(config: SearchConfig) -> bool:
    return config.select_method == "softmax_costmodel" and config.lambdas > 0


def build_embedder(config: SearchConfig, device: str | None, scripted: bool):
    if not needs_embedder(config):
        return None
    if scripted and not config.embed_model:
        from ets.backends.scripted import HashingEmbedder

        return HashingEmbedder()
    from ets.backends.embedder import load_embedder

    return load_embedder(config.embed_model, device=device)  # a GPU index (as the reference) or a torch device


def build_backends(args: argparse.Namespace, config: SearchConfig, log: Callable[[str], None]) -> Backends:
    embedder = build_embedder(config, args.embed_device, args.scripted)
    if args.scripted:
        if args.policy_host or args.reward_host:
            raise ConfigError("--scripted replaces the models: drop --policy_host / --reward_host")
        from ets.backends.scripted import toy_world

        policy, reward = toy_world()
        return Backends(policy, reward, embedder, {"policy": "scripted toy world", "reward": "scripted toy world"})

    description = {}
    if args.policy_host:
        from ets.backends.http import make_policy

        policy = make_policy(args.policy_host, model=args.policy_model, max_concurrency=4 * config.num_threads)
        description["policy"] = {"api": "openai-completions", "hosts": args.policy_host, "model": args.policy_model}
    else:
        from ets.backends.llamacpp import LlamaCppPolicy

        policy = LlamaCppPolicy(model_path=args.policy_model, seed=config.seed or 0)
        description["policy"] = {"engine": "llama.cpp in-process", "model": str(policy.model_path)}
        log(f"policy: {policy.model_path} (llama.cpp, in-process)")

    if args.reward_host:
        from ets.backends.http import make_reward

        reward = make_reward(args.reward_host, api=args.reward_api, reward_model_type=config.reward_model_type,
                             model=args.reward_model, prompt_format=config.format_name)
        description["reward"] = {"api": args.reward_api or config.reward_model_type, "hosts": args.reward_host}
    else:
        from ets.backends.llamacpp import LlamaCppJudge

        reward = LlamaCppJudge(model_path=args.reward_model)
        description["reward"] = {"engine": "llama.cpp in-process judge", "model": str(reward.model_path)}
        log(f"reward: self-evaluation judge on {reward.model_path} (llama.cpp, in-process)")
    if embedder is not None:
        description["embedder"] = config.embed_model or "built-in all-MiniLM-L6-v2"
    return Backends(policy, reward, embedder, description)
