"""Policy and PRM on real inference servers, over HTTP.

Factories (what ``ets run --policy_host / --reward_host / --reward_api`` call)::

    make_policy(hosts, *, model=None, max_concurrency=64, timeout=120.0,
                retries=3, backoff=0.5, use_n=True) -> OpenAICompletionsPolicy
    make_reward(hosts, *, api=None, reward_model_type="llemma", model=None,
                max_concurrency=64, timeout=120.0, retries=3, backoff=0.5,
                good_token_id=None, bad_token_id=None, pooling_task=None,
                prompt_format=None) -> HTTPReward

``hosts`` is one URL, a comma-separated string, or a list (``host:port`` is
read as ``http://host:port``); requests spread over them (see
:mod:`ets.backends.http.transport`). Both objects implement the protocols of
:mod:`ets.backends.base` and have ``async start()``: it
fails fast with a :class:`~ets.backends.base.BackendError` naming the URL when
a server is unreachable or serves another model than ``model``; ``generate`` /
``score`` call it on first use anyway. ``async aclose()`` closes connections;
``await aclose_all()`` closes those of every HTTP backend, before the event
loop ends (else Python warns about unclosed sockets).

Reward APIs (``api``): ``"ets"`` (``ets serve reward``), ``"sglang"``
(token-logit PRMs on SGLang's ``/generate``; also spelled ``sglang-generate``),
``"vllm"`` (classification PRMs on vLLM's ``/pooling``; also ``vllm-pooling``). With ``api=None`` the server is asked first: our
server says who it is on ``GET /info``; otherwise ``reward_model_type``
decides (``mistral``, ``llemma``, ``llama`` -> sglang; ``qwen`` -> vllm).
"""

from ets.backends.http.make import API_ALIASES, HTTPReward, make_policy, make_reward
from ets.backends.http.policy import OpenAICompletionsPolicy, parse_completion
from ets.backends.http.reward import (
    PRM_SPECS,
    REWARD_APIS,
    EtsReward,
    PRMSpec,
    SGLangGenerateReward,
    VLLMPoolingReward,
    parse_pooling_score,
    parse_sglang_score,
)
from ets.backends.http.transport import HostPool, aclose_all, normalize_url, split_hosts

__all__ = [
    "API_ALIASES", "EtsReward", "HTTPReward", "aclose_all", "HostPool", "OpenAICompletionsPolicy", "PRM_SPECS",
    "PRMSpec", "REWARD_APIS", "SGLangGenerateReward", "VLLMPoolingReward", "make_policy", "make_reward",
    "normalize_url", "parse_completion", "parse_pooling_score", "parse_sglang_score", "split_hosts",
]
