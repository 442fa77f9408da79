"""The search configuration: the reference's hyperparameter keys and ours, typed and checked once.

The published ETS files (``hype-parameters/ets_*_math500.yaml``) load
unchanged. A misspelled key is refused with the nearest valid key; a bad value
is refused naming the key and what it accepts.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import yaml

from ets.formats import FORMATS
from ets.models import BUILTIN_POLICIES, DEFAULT_POLICY, DEFAULT_WEIGHTS, POLICY_WEIGHTS

SELECT_METHODS = ("softmax_costmodel", "softmax", "beam_search", "dvts", "best_of_n", "particle_filtering")
ILP_SOLVERS = ("highs", "highs-milp", "cbc")


class ConfigError(ValueError):
    """A configuration value the user must fix; the message names the key."""


@dataclass(frozen=True)
class SearchConfig:
    # --- the reference's keys (hype-parameters/*.yaml) ---
    width: int = 16  # finished trajectories wanted per problem (N)
    select_method: str = "softmax_costmodel"  # ETS; or softmax (REBASE), beam_search, dvts, best_of_n, particle_filtering
    lambdac: float = 1.0  # ETS: weight of the KV-cache cost term
    lambdas: float = 0.0  # ETS: weight of the semantic-diversity term (needs an embedder when > 0)
    softmax_temperature: float = 0.2  # temperature of the softmax allocation over PRM scores
    temperature: float = 1.0  # policy sampling temperature
    max_step_tokens: int = 256  # tokens per sampled step
    max_tokens: int = 1024  # a trajectory with this many tokens (prompt included) is retired
    num_threads: int = 8  # problems searched concurrently
    store_path: str | None = None  # the run directory when --output_path is not given
    policy_model_type: str = "llemma"  # prompt format of the policy (llemma, mistral, llama, ...)
    reward_model_type: str = "llemma"  # PRM family: picks the scoring adapter
    fixedwidth: int = -1  # beam_search / dvts: beams or subtrees; <= 0 means ceil(sqrt(width))
    # --- ours ---
    prompt_format: str | None = None  # how the question becomes the prompt; None: policy_model_type's format
    ilp_solver: str = "highs"  # ETS keep-program: highs (in-process: tree DP, HiGHS MILP as fallback), highs-milp, or cbc (PuLP, the reference's)
    max_depth: int = 25  # rounds of selection and expansion (the reference's hard limit)
    seed: int | None = None  # sampling seed for backends that take one
    embed_model: str | None = None  # sentence-transformers model for lambdas > 0; None: the built-in one
    policy_model: str | None = None  # CPU: a built-in policy (smollm2-135m, qwen2.5-coder-0.5b) or a GGUF path; servers: the model name to check
    policy_weights: str = DEFAULT_WEIGHTS  # a built-in CPU policy: auto (its faster copy here), f16, q8_0 or stored (docs/cpu-models.md#weights)
    retire_empty_steps: bool = False  # retire a trajectory whose policy ended its turn without an answer (the reference expands it again; docs/algorithm.md#retirement-and-the-remaining-width)
    calculator: bool = False  # correct the results of false equations in each step the policy writes (docs/cpu-models.md#the-calculator)
    pf_temperature: float = 1.0  # particle_filtering: resampling weights are softmax(logit(PRM score) / pf_temperature)

    def __post_init__(self) -> None:
        _check_int(self, "width", minimum=1)
        _check_choice(self, "select_method", SELECT_METHODS)
        _check_number(self, "lambdac", minimum=0.0)
        _check_number(self, "lambdas", minimum=0.0)
        _check_number(self, "softmax_temperature", minimum=0.0, exclusive=True)
        _check_number(self, "pf_temperature", minimum=0.0, exclusive=True)
        _check_number(self, "temperature", minimum=0.0)
        _check_int(self, "max_step_tokens", minimum=1)
        _check_int(self, "max_tokens", minimum=1)
        _check_int(self, "num_threads", minimum=1)
        _check_int(self, "fixedwidth")
        _check_int(self, "max_depth", minimum=1)
        _check_choice(self, "ilp_solver", ILP_SOLVERS)
        _check_choice(self, "policy_weights", POLICY_WEIGHTS)
        if self.seed is not None:
            _check_int(self, "seed")
        for key in ("calculator", "retire_empty_steps"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"{key}: expected true or false, got {getattr(self, key)!r}")
        if self.prompt_format is not None:
            _check_choice(self, "prompt_format", tuple(FORMATS))
        elif self.policy_model_type not in FORMATS:
            raise ConfigError(
                f"policy_model_type: {self.policy_model_type!r} has no prompt format; "
                f"set prompt_format to one of {', '.join(sorted(FORMATS))}"
            )
        for key in ("store_path", "embed_model", "policy_model", "policy_model_type", "reward_model_type"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{key}: expected a string, got {value!r}")

    @property
    def format_name(self) -> str:
        return self.prompt_format or self.policy_model_type

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> "SearchConfig":
        known = set(cls.keys())
        for key in data:
            if key not in known:
                near = difflib.get_close_matches(str(key), sorted(known), n=1)
                hint = f"; did you mean {near[0]!r}?" if near else f"; valid keys: {', '.join(sorted(known))}"
                raise ConfigError(f"{source}: unknown key {key!r}{hint}")
        try:
            return cls(**data)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> "SearchConfig":
        return cls.from_dict(cls.read_yaml(path), source=str(path))

    @classmethod
    def read_yaml(cls, path: str | Path) -> dict[str, Any]:
        """The keys a config file sets, each checked (an error names the file); keys it leaves unset are absent."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
                              "save it as UTF-8") from None
        except OSError as exc:
            raise ConfigError(f"cannot read the config file {path}: {exc.strerror}") from None
        data = load_yaml(text, str(path))
        if data is None:
            raise ConfigError(f"{path}: the file holds no keys; expected hyperparameters such as 'width: 16'")
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of hyperparameter keys, got {type(data).__name__}")
        cls.from_dict(data, source=str(path))
        return data

    def replace(self, **changes: Any) -> "SearchConfig":
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def builtin_policy_defaults(chosen: dict[str, Any], *, reward_server: bool = False) -> dict[str, Any]:
    """The defaults of the built-in CPU policy a run computes with, for the keys ``chosen`` (the user's
    config file and flags) leaves unset: none for a GGUF path (a model we know nothing of). A prompt format
    chosen through ``policy_model_type`` counts as set, and a PRM server's family is the user's to name."""
    policy = BUILTIN_POLICIES.get(chosen.get("policy_model") or DEFAULT_POLICY)
    if policy is None:
        return {}
    unset = {key: value for key, value in policy.defaults.items() if key not in chosen}
    if "policy_model_type" in chosen:
        unset.pop("prompt_format", None)
    if reward_server:
        unset.pop("reward_model_type", None)
    return unset


class StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, with two fixes: floats as YAML 1.2 writes them (``1e-3``,
    which YAML 1.1 reads as a string), and a key given twice refused (YAML 1.1 keeps
    the last one silently)."""


def _construct_mapping_once(loader: StrictLoader, node, deep: bool = False) -> dict:
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(f"line {key_node.start_mark.line + 1}: key {key!r} is given twice "
                              f"(first on line {seen[key] + 1}); keep one")
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_FLOAT_1_2 = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                           |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                           |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                           |[-+]?\.(?:inf|Inf|INF)
                           |\.(?:nan|NaN|NAN))$""", re.X)
StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_1_2, list("-+0123456789."))
StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping_once)


def load_yaml(text: str, source: str) -> Any:
    """One YAML document (a config file, a ``--set`` value); errors name ``source``."""
    try:
        return yaml.load(text, Loader=StrictLoader)
    except ConfigError as exc:
        raise ConfigError(f"{source}:{str(exc).removeprefix('line ')}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {' '.join(str(exc).split())}") from None


def _check_int(cfg: SearchConfig, key: str, minimum: int | None = None) -> None:
    value = getattr(cfg, key)
    if isinstance(value, float) and value.is_integer():
        object.__setattr__(cfg, key, int(value))
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}: expected a whole number, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{key}: must be >= {minimum}, got {value}")


def _check_number(cfg: SearchConfig, key: str, minimum: float, exclusive: bool = False) -> None:
    value = getattr(cfg, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{key}: expected a finite number, got {value!r}")
    if value < minimum or (exclusive and value == minimum):
        bound = f"> {minimum}" if exclusive else f">= {minimum}"
        raise ConfigError(f"{key}: must be {bound}, got {value}")
    object.__setattr__(cfg, key, float(value))


def _check_choice(cfg: SearchConfig, key: str, choices: tuple[str, ...]) -> None:
    value = getattr(cfg, key)
    if value not in choices:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(choices)}")
