"""The lifecycle steps of the backend protocols: no-ops a backend inherits, server checks that run once."""

from __future__ import annotations

import asyncio

import pytest

from ets.backends.arithmetic import ArithmeticPRM
from ets.backends.base import BackendError, Backends, Context, Policy, Reward, SamplingParams, Step
from ets.backends.http.backend import HTTPBackend, served_model
from ets.backends.http.transport import HostPool


class BarePolicy(Policy):
    """A policy with nothing but the protocol's two calls."""

    async def generate(self, context: Context, n: int, params: SamplingParams) -> list[Step]:
        return [Step(text="1 + 1 = 2\n", num_tokens=6)] * n

    async def count_tokens(self, text: str) -> int:
        return len(text.split())


class ConstantReward(Reward):
    async def score(self, contexts):
        return [0.25 for _ in contexts]


def test_a_backend_without_its_own_lifecycle_starts_and_closes():
    policy, reward = BarePolicy(), ConstantReward()
    assert isinstance(policy, Policy) and isinstance(reward, Reward)
    backends = Backends(policy, reward)

    async def life():
        await backends.start()
        steps = await policy.generate(Context("q", "q"), 2, SamplingParams())
        scores = await reward.score([Context("q", "q", ("a\n",))])
        await backends.aclose()
        return steps, scores

    steps, scores = asyncio.run(life())
    assert [s.text for s in steps] == ["1 + 1 = 2\n", "1 + 1 = 2\n"] and scores == [0.25]
    assert backends.close() is None
    # the model-free CPU PRM inherits them too
    prm = ArithmeticPRM()
    assert asyncio.run(prm.start()) is None and asyncio.run(prm.aclose()) is None


class CountingBackend(HTTPBackend):
    what = "policy"

    def __init__(self, pool: HostPool) -> None:
        super().__init__(pool)
        self.checks = 0

    async def check_servers(self) -> None:
        await asyncio.sleep(0.01)  # callers arrive while the first check is running
        self.checks += 1


def test_http_server_checks_run_once_however_many_callers():
    backend = CountingBackend(HostPool("http://127.0.0.1:9", what="policy"))

    async def many():
        await asyncio.gather(*(backend.start() for _ in range(5)))
        await backend.start()

    asyncio.run(many())
    assert backend.checks == 1 and backend.hosts == ["http://127.0.0.1:9"]


def test_unreachable_start_check_says_how_to_start_a_server():
    backend = CountingBackend(HostPool("http://127.0.0.1:9", what="policy", timeout=2, backoff=0.01))
    with pytest.raises(BackendError) as info:
        asyncio.run(backend.start_check("/v1/models", host="http://127.0.0.1:9", serve="ets serve policy --port PORT"))
    error = info.value
    assert str(error).startswith("cannot reach the policy server (")
    assert "Start one, e.g. `ets serve policy --port PORT`, or fix --policy_host (http://127.0.0.1:9/v1/models)" \
        in str(error)
    assert error.details == {"status": None}


def test_served_model_matches_the_exact_name_first_then_the_last_path_part():
    assert served_model("org/policy-7b", ["policy-7b", "org/policy-7b"]) == "org/policy-7b"
    assert served_model("Policy-7B", ["/models/org/policy-7b/"]) == "/models/org/policy-7b/"
    assert served_model("org/other", ["org/policy-7b"]) is None
