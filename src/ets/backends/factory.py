"""Builds the policy, reward and embedder a run asks for.

No ``--policy_host``: the built-in CPU models (llama.cpp in-process).
``--policy_host`` / ``--reward_host``: model servers over HTTP.
``--scripted``: a made-up policy and PRM, for trying the machinery without a model.

What to build is a :class:`BackendSpec`: plain data, so a distributed runner
can ship it to workers and build the same backends there.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from ets.backends.arithmetic import ArithmeticPRM
from ets.backends.base import Backends
from ets.backends.embedder import load_embedder
from ets.backends.llamacpp import DEFAULT_FORMAT, LlamaCppPolicy, TokenLogitPRM, build_llamacpp_judge, default_threads
from ets.backends.llamacpp.weights import resolve_policy_model
from ets.backends.scripted import HashingEmbedder, toy_world
from ets.config import ConfigError, SearchConfig
from ets.models import BUILTIN_POLICIES


@dataclass(frozen=True)
class BackendSpec:
    policy_hosts: tuple[str, ...] = ()  # empty: the built-in CPU policy
    reward_hosts: tuple[str, ...] = ()  # empty: an in-process PRM (the arithmetic PRM by default)
    reward_api: str | None = None
    policy_model: str | None = None  # served model name to check (HTTP) or GGUF path (CPU)
    reward_model: str | None = None
    embed_device: str | None = None
    scripted: bool = False
    scripted_delay: float = 0.0  # seconds each scripted policy call waits (a slow model, to try interruptions)
    request_timeout: float | None = None  # seconds a model server has to answer; None: the HTTP default

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "BackendSpec":
        spec = cls(
            policy_hosts=tuple(args.policy_host or ()),
            reward_hosts=tuple(args.reward_host or ()),
            reward_api=args.reward_api,
            policy_model=args.policy_model,
            reward_model=args.reward_model,
            embed_device=args.embed_device,
            scripted=args.scripted,
            scripted_delay=args.scripted_delay,
            request_timeout=args.request_timeout,
        )
        if spec.scripted and (spec.policy_hosts or spec.reward_hosts):
            raise ConfigError("--scripted replaces the models: drop --policy_host / --reward_host")
        return spec

    def to_dict(self) -> dict:
        return asdict(self)

    def timeouts(self) -> dict:
        return {} if self.request_timeout is None else {"timeout": self.request_timeout}


def default_prompt_format(scripted: bool) -> str:
    return "raw" if scripted else DEFAULT_FORMAT


def needs_embedder(config: SearchConfig) -> bool:
    return config.select_method == "softmax_costmodel" and config.lambdas > 0


def build_embedder(config: SearchConfig, spec: BackendSpec):
    if not needs_embedder(config):
        return None
    if spec.scripted and not config.embed_model:
        return HashingEmbedder()
    return load_embedder(config.embed_model, device=spec.embed_device)  # a GPU index (as the reference) or a torch device


def cpu_reward_kind(spec: BackendSpec, config: SearchConfig) -> str | None:
    """Which in-process PRM a run scores with: ``gguf`` (a PRM's GGUF, read as its prompt format says:
    step tag, RLHFlow turns or a judge), ``judge`` (``reward_model_type: judge``: the policy model
    judging its own steps) or ``arithmetic`` (the model-free CPU default, see docs/cpu-models.md);
    None when a server or the scripted world scores."""
    if spec.reward_hosts or spec.scripted:
        return None
    if spec.reward_model:
        return "gguf"
    return "judge" if config.reward_model_type == "judge" else "arithmetic"


def uses_cpu_llm_reward(spec: BackendSpec, config: SearchConfig) -> bool:
    """Whether the reward is a llama.cpp model in this process (the policy then shares the cores)."""
    return cpu_reward_kind(spec, config) in ("gguf", "judge")


def build_cpu_reward(spec: BackendSpec, config: SearchConfig):
    """The in-process PRM :func:`cpu_reward_kind` names."""
    kind = cpu_reward_kind(spec, config)
    if kind == "gguf":
        return TokenLogitPRM(spec.reward_model, format=config.format_name)
    if kind == "judge":  # the policy model judging its own steps
        return build_llamacpp_judge(cpu_policy_file(spec, config), format=config.format_name)
    return ArithmeticPRM.for_policy(policy_model(spec, config))


def policy_model(spec: BackendSpec, config: SearchConfig) -> str | None:
    """The policy model asked for: ``--policy_model``, else the config's ``policy_model``."""
    return spec.policy_model or config.policy_model


def cpu_policy_file(spec: BackendSpec, config: SearchConfig) -> Path:
    """The GGUF file the in-process policy (and a self-judge) computes with: a built-in policy's file for
    ``policy_weights``, or the path given."""
    return resolve_policy_model(policy_model(spec, config), config.policy_weights)


def build_backends(spec: BackendSpec, config: SearchConfig, log: Callable[[str], None] = lambda message: None) -> Backends:
    embedder = build_embedder(config, spec)
    if spec.scripted:
        policy, reward = toy_world(delay=spec.scripted_delay)
        return Backends(policy, reward, embedder, {"policy": "scripted toy world", "reward": "scripted toy world"})

    description = {}
    if spec.policy_hosts:
        from ets.backends.http import make_policy  # httpx: loaded only by runs against model servers

        model = policy_model(spec, config)
        policy = make_policy(list(spec.policy_hosts), model=model, max_concurrency=4 * config.num_threads,
                             **spec.timeouts())
        description["policy"] = {"api": "openai-completions", "hosts": list(spec.policy_hosts), "model": model}
    else:
        model = policy_model(spec, config)
        if (model is None or model in BUILTIN_POLICIES) and config.format_name != DEFAULT_FORMAT:
            log(f"warning: the built-in CPU model is instruct-tuned for prompt_format {DEFAULT_FORMAT}; "
                f"{config.format_name!r} will give it prompts it was not trained on (set --prompt_format {DEFAULT_FORMAT})")
        # a llama.cpp PRM decodes beside the policy: each gets half the cores; otherwise the policy takes them all
        threads = default_threads(shared=uses_cpu_llm_reward(spec, config))
        policy = LlamaCppPolicy(model_path=cpu_policy_file(spec, config), seed=config.seed or 0, n_threads=threads)
        description["policy"] = {"engine": "llama.cpp in-process", "model": str(policy.model_path)}
        log(f"policy: {policy.model_path} (llama.cpp, in-process)")

    if spec.reward_hosts:
        from ets.backends.http import make_reward  # httpx: loaded only by runs against model servers

        reward = make_reward(list(spec.reward_hosts), api=spec.reward_api, reward_model_type=config.reward_model_type,
                             model=spec.reward_model, prompt_format=config.format_name, **spec.timeouts())
        description["reward"] = {"api": spec.reward_api or config.reward_model_type, "hosts": list(spec.reward_hosts)}
    else:
        reward = build_cpu_reward(spec, config)
        engine = "in-process" if reward.mode == "arithmetic" else "llama.cpp in-process"
        description["reward"] = {"engine": f"{engine}, {reward.mode}", "model": str(reward.model_path)}
        log(f"reward: {reward.mode} PRM ({engine}; {reward.model_path})")
    if embedder is not None:
        description["embedder"] = config.embed_model or "built-in all-MiniLM-L6-v2"
    return Backends(policy, reward, embedder, description)
