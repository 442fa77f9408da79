"""Our methods against its-hub's (Red Hat AI Innovation Team, PyPI its-hub) on equal terms: one policy
server, one PRM, the same problems, prompt, step delimiter and budgets.

its-hub's beam search and particle filtering run as its-hub runs them (its StepGeneration, its
resampling and stopping); ours (ETS, REBASE, beam search, best-of-N, and particle filtering where
bench/methods.py has it) run through `ets`'s engine. Both sides talk to the same policy server
(`ets serve policy --engine ets`, our llama.cpp engine batching every request in flight, started here
unless --policy_host is given; --server_engine llamacpp for llama-cpp-python's) through a counting
proxy in this process, which counts the /v1/completions requests and sums their usage.completion_tokens:
the requests and tokens of every row come from that one source. The PRM is the built-in arithmetic PRM
of the config, in-process for both (its-hub reaches it through its AbstractProcessRewardModel).

Printed per method: accuracy by the weighted majority vote and by best-of-N (last step's score) over the
trajectories that reached an answer (`ets evaluate`'s extraction and grading, 95 % Wilson intervals),
its-hub's own pick (the particle / beam its result selects, graded the same way), tokens generated,
server requests, wall time and tokens/s.

What is the same, and what is not (docs/results.md reads the table):
* Prompt: its-hub's algorithms hand their LM chat messages [user: question, assistant: steps so far];
  its own OpenAICompatibleLanguageModel speaks /chat/completions only, and llama-cpp-python's server
  closes a trailing assistant message and opens a new turn (continue_final_message is vLLM's), which
  would restart the solution at every step. So its-hub's LM here is an adapter (its documented
  AbstractLanguageModel interface) that writes those messages as our prompt format's text
  (`small_instruct`: system prompt, five worked examples, the question, then the steps) and sends it to
  /v1/completions with our policy client: the same text, stop string, max tokens per step,
  temperature and per-request seeds as our searches send.
* Steps: its-hub strips the delimiter and joins steps with it; a step cut by the step token limit is
  therefore followed by a line break there, where ours continues the same line.
* The calculator (the config's `calculator: true`) corrects each step the policy writes, for both.
* Finished: ours retire a trajectory at an answer line, at max_tokens (prompt included) or when the
  policy ends its turn (retire_empty_steps); its-hub stops one only when a step holds its stop_token
  (set to our answer marker, "Therefore, the final answer is") or after max_steps (set so both allow
  max_depth steps). A turn ended without an answer keeps being extended by its-hub (an empty step each
  request) until its weight or rank drops it; there is no token budget per trajectory in its-hub.
* Budget: the width is the number of trajectories for both (its-hub's `budget`: particles, or beams x
  their copies). its-hub's beam search keeps beam_width beams (a divisor of the width, the one nearest
  ours, ceil(sqrt(width)), from below) and expands each into width / beam_width copies, one request each.
* Particle filtering: its-hub weighs a particle by the logit of its newest step's score and resamples
  multinomially at every step, finished particles included; the final pick is the highest weight.
* Concurrency: both search num_threads problems at once; the server decodes every request in flight
  together (llama-cpp-python's, --server_engine llamacpp, one request at a time).
* Runs do not resume: each method's run directory under --out is replaced (the figures are timings).

Time: 40 problems at width 4, the seven rows, took 54 min with our server on one thread, on 2 cores
shared with another benchmark (docs/results.md); width 8 about doubles it. On a busy machine pass
--server_threads 1.

    pip install -e ".[peers]"        # its-hub 1.2.0 with its LM extra (make install installs it too)
    python bench/peers.py --problems 40 --width 4      # the comparison on docs/results.md (~1 h)
    python bench/peers.py                              # 40 problems, width 8 (~2 h)
    python bench/peers.py --problems 3 --width 4 --no-record   # a check (a few minutes)
    python bench/peers.py --policy_host URL            # a policy server already running (serving the config's model)
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from methods import BEST, METHODS, VOTE, _pct, run_method  # noqa: E402
from servers import start_serve, stop_server  # noqa: E402

from ets.backends.arithmetic import correct_arithmetic  # noqa: E402
from ets.backends.base import Context, draw_stream  # noqa: E402
from ets.backends.factory import BackendSpec, build_backends  # noqa: E402
from ets.backends.llamacpp.library import default_threads  # noqa: E402
from ets.commands.run import parse_overrides  # noqa: E402
from ets.config import SearchConfig  # noqa: E402
from ets.datasets import load_problems  # noqa: E402
from ets.evaluate import evaluate_settings  # noqa: E402
from ets.evaluate.intervals import wilson_interval  # noqa: E402
from ets.formats import get_format  # noqa: E402
from ets.search import prompt_text, sampling_params  # noqa: E402
from ets.tree import ANSWER_MARKER_IN_STEP, is_leaf_text  # noqa: E402

# ours, as bench/methods.py names them (particle_filtering where it has it)
OURS = ("ets", "rebase", "beam_search", "best_of_n", "particle_filtering")
PEERS = ("beam_search", "particle_filtering", "entropic_particle_filtering")
DEFAULT_PEERS = ("beam_search", "particle_filtering")
INSTALL = 'pip install -e ".[peers]"'


# ---------------------------------------------------------------- the counting proxy

class CountingProxy:
    """Forwards every request to ``upstream``; counts the POSTs to /v1/completions and sums their
    usage.completion_tokens. Runs in its own thread, so neither side's event loop carries it."""

    def __init__(self, upstream: str) -> None:
        import httpx

        self.upstream = upstream.rstrip("/")
        self.requests = 0
        self.tokens = 0
        self._lock = threading.Lock()
        client = httpx.Client(timeout=600.0, trust_env=False)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "authorization")}
                resp = client.request(self.command, proxy.upstream + self.path, content=body, headers=headers)
                if self.command == "POST" and self.path.split("?")[0] == "/v1/completions" and resp.status_code == 200:
                    try:
                        tokens = int((resp.json().get("usage") or {}).get("completion_tokens") or 0)
                    except (ValueError, AttributeError):
                        tokens = 0
                    with proxy._lock:
                        proxy.requests += 1
                        proxy.tokens += tokens
                self.send_response(resp.status_code)
                self.send_header("Content-Type", resp.headers.get("content-type", "application/json"))
                self.send_header("Content-Length", str(len(resp.content)))
                self.end_headers()
                self.wfile.write(resp.content)

            do_GET = do_POST = _forward

            def log_message(self, *args) -> None:  # quiet: the table is the output
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def counts(self) -> tuple[int, int]:
        with self._lock:
            return self.requests, self.tokens

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------- the policy server

def start_server(model: str, threads: int, log: Path, engine: str = "ets") -> tuple[subprocess.Popen, str]:
    """``ets serve policy --engine ENGINE`` with the config's built-in model; its URL once it answers."""
    # --n_threads: llama-cpp-python's flag, which ours takes too
    return start_serve(["policy", "--engine", engine, "--model", model, "--served-model-name", model,
                        "--", "--n_threads", str(threads)], log)


# ---------------------------------------------------------------- its-hub, on our policy and PRM

def its_hub_modules():
    try:
        from its_hub.api import AbstractLanguageModel, AbstractProcessRewardModel
        from its_hub.core.algorithms.beam_search import BeamSearch
        from its_hub.core.algorithms.particle_gibbs import EntropicParticleFiltering, ParticleFiltering
        from its_hub.core.lms.step_generation import StepGeneration
    except ImportError as exc:
        raise SystemExit(f"bench/peers.py needs its-hub ({exc}): {INSTALL}") from None
    return AbstractLanguageModel, AbstractProcessRewardModel, BeamSearch, ParticleFiltering, \
        EntropicParticleFiltering, StepGeneration


def steps_of(response: str, delimiter: str) -> tuple[str, ...]:
    """Our steps (each ending with the delimiter) from its-hub's text of them (joined by the delimiter)."""
    return tuple(part + delimiter for part in response.split(delimiter))


def build_peer_adapters(config: SearchConfig, policy, reward, problem_ids: dict[str, object]):
    """its-hub's LM and PRM on our policy client and our PRM. ``problem_ids``: question -> problem id
    (each problem's requests draw their own seeds, as a search's nodes do)."""
    AbstractLanguageModel, AbstractProcessRewardModel, *_ = its_hub_modules()
    fmt = get_format(config.format_name)
    delimiter = fmt.stop[0]
    base_params = sampling_params(config)

    class PolicyLM(AbstractLanguageModel):
        """[user: question, assistant: steps so far] as our prompt text, on /v1/completions."""

        def __init__(self) -> None:
            self.draws: dict[object, int] = {}

        async def agenerate(self, messages, stop=None, max_completion_tokens=None, temperature=None,
                            include_stop_str_in_output=None, **kwargs):
            single = not isinstance(messages[0], list)
            batch = [messages] if single else messages
            temperatures = temperature if isinstance(temperature, list) else [temperature] * len(batch)
            out = await asyncio.gather(*(self.one(m, stop, max_completion_tokens, t, include_stop_str_in_output)
                                         for m, t in zip(batch, temperatures)))
            return out[0] if single else out

        async def one(self, messages, stop, max_tokens, temperature, keep_stop) -> dict:
            question = messages[0].content
            done = messages[1].content if len(messages) > 1 else ""
            # the same request our search sends: refuse a setting that would make it differ
            if stop != delimiter or temperature != config.temperature or max_tokens not in (None, config.max_step_tokens):
                raise ValueError(f"its-hub asked for stop={stop!r}, temperature={temperature}, max tokens={max_tokens}; "
                                 f"the comparison needs {delimiter!r}, {config.temperature}, {config.max_step_tokens}")
            pid = problem_ids[question]
            draw = self.draws[pid] = self.draws.get(pid, 0) + 1
            steps = steps_of(done.removesuffix(delimiter), delimiter) if done else ()  # StepGeneration ends it with one
            context = Context(question, prompt_text(config, question), steps)
            params = dataclasses.replace(base_params, stream=draw_stream(("its-hub", pid), draw))
            (step,) = await policy.generate(context, 1, params)
            text = correct_arithmetic(step.text) if config.calculator else step.text
            if not keep_stop and text.endswith(delimiter):
                text = text[: -len(delimiter)]
            return {"role": "assistant", "content": text}

    class PRM(AbstractProcessRewardModel):
        """Our PRM's score of each candidate's newest step."""

        async def ascore(self, prompt_or_messages, steps: list[str]) -> list[float]:
            question = prompt_or_messages if isinstance(prompt_or_messages, str) else prompt_or_messages[0].content
            prompt = prompt_text(config, question)
            scores = await reward.score([Context(question, prompt, steps_of(s, delimiter)) for s in steps])
            if any(s is None for s in scores):
                raise ValueError(f"the PRM gave no score for a step of {question[:60]!r}")
            return [float(s) for s in scores]

        def score(self, prompt_or_messages, steps: list[str]) -> list[float]:
            return asyncio.run(self.ascore(prompt_or_messages, steps))

    return PolicyLM(), PRM()


def peer_beam_width(width: int) -> int:
    """its-hub's beams: the divisor of ``width`` nearest our beam search's ceil(sqrt(width)), from below."""
    ours = int(np.ceil(np.sqrt(width)))
    return max(d for d in range(1, ours + 1) if width % d == 0)


def peer_algorithm(name: str, config: SearchConfig, prm):
    _, _, BeamSearch, ParticleFiltering, EntropicParticleFiltering, StepGeneration = its_hub_modules()
    fmt = get_format(config.format_name)
    # its-hub stops a trajectory after a step that holds stop_token, or the step after max_steps: at most
    # max_depth steps, as ours
    sg = StepGeneration(max_steps=config.max_depth - 1, step_token=fmt.stop[0], stop_token=ANSWER_MARKER_IN_STEP,
                        temperature=config.temperature, include_stop_str_in_output=False)
    if name == "beam_search":
        return BeamSearch(sg, prm, beam_width=peer_beam_width(config.width))
    if name == "particle_filtering":
        return ParticleFiltering(sg, prm)
    return EntropicParticleFiltering(sg, prm)


def final_responses(result) -> list[dict]:
    """Every final trajectory of an its-hub result (EntropicParticleFiltering's ainfer returns particle
    Gibbs's result: its last, only, iteration's particles)."""
    return result.responses if hasattr(result, "responses") else result.responses_lst[-1]


def peer_answers(problem, config: SearchConfig, result, prm_scores) -> tuple[dict, dict]:
    """One problem of an answers.json from its-hub's result: the trajectories that reached an answer, each
    with its steps' scores (the PRM's, step by step), and its-hub's own pick as a one-trajectory entry."""
    fmt = get_format(config.format_name)
    prompt = prompt_text(config, problem.question)

    def trajectory(content: str) -> tuple[dict, bool]:
        steps = steps_of(content, fmt.stop[0])
        text = prompt + "".join(steps)
        answered = any(is_leaf_text(prompt + "".join(steps[: i + 1]), step) for i, step in enumerate(steps))
        return {"text": text, "steps": list(steps), "step_scores": prm_scores(problem.question, steps)}, answered

    responses = final_responses(result)
    finished = [t for t, answered in map(trajectory, (r["content"] for r in responses)) if answered]
    picked, _ = trajectory(responses[result.selected_index]["content"])
    entry = {"id": problem.id, "question": problem.question, "ground_truth_answer": problem.answer}
    return {**entry, "model_answer": finished}, {**entry, "model_answer": [picked]}


# ---------------------------------------------------------------- rows

@dataclass
class PeerRow:
    impl: str  # "ets" or "its-hub"
    method: str
    width: int
    vote: list[bool]
    best: list[bool]
    own: list[bool] | None  # its-hub's own pick (None for ours: best-of-N is our pick)
    answered: float  # trajectories with an answer, per problem
    requests: int
    tokens: int
    time: float
    extra: dict = field(default_factory=dict)

    def figures(self) -> dict:
        n = len(self.vote)
        out = {"impl": self.impl, "method": self.method, "width": self.width, "problems": n,
               "answered_per_problem": self.answered, "requests": self.requests, "tokens_generated": self.tokens,
               "time": self.time, "tokens_per_s": self.tokens / self.time if self.time else 0.0, **self.extra}
        for name, correct in (("vote", self.vote), ("best", self.best), ("own", self.own)):
            if correct is not None:
                k = sum(correct)
                out[f"{name}_accuracy"], out[f"{name}_ci"] = k / n, list(wilson_interval(k, n))
        return out


def _cell(figures: dict, name: str) -> str:
    if f"{name}_accuracy" not in figures:
        return f"{'-':>20}"
    low, high = figures[f"{name}_ci"]
    return f"{_pct(figures[f'{name}_accuracy'])} [{_pct(low)},{_pct(high)}]"


def render(rows: list[PeerRow]) -> str:
    lines = [f"{'impl':<8} {'method':<28} {'width':>5} {'WMV last % [95% CI]':>20} {'BoN last % [95% CI]':>20} "
             f"{'own pick % [95% CI]':>20} {'answers':>7} {'tokens':>7} {'requests':>8} {'time s':>7} {'tok/s':>6}"]
    for r in rows:
        f = r.figures()
        lines.append(f"{r.impl:<8} {r.method:<28} {r.width:>5} {_cell(f, 'vote')} {_cell(f, 'best')} {_cell(f, 'own')} "
                     f"{f['answered_per_problem']:>7.1f} {f['tokens_generated']:>7} {f['requests']:>8} "
                     f"{f['time']:>7.1f} {f['tokens_per_s']:>6.1f}")
    return "\n".join(lines)


async def run_ours(name: str, problems, base: SearchConfig, backends, out: Path, proxy: CountingProxy) -> PeerRow:
    shutil.rmtree(out / f"{name}_w{base.width}", ignore_errors=True)  # a fresh measurement, not a resumed run
    before, started = proxy.counts(), time.perf_counter()
    row = await run_method(name, base.width, problems, base, backends, out, base.format_name)
    elapsed = time.perf_counter() - started
    requests, tokens = (a - b for a, b in zip(proxy.counts(), before))
    answers = json.loads((row.run_dir / "answers.json").read_text(encoding="utf-8"))
    answered = sum(len(p["model_answer"]) for p in answers) / len(answers)
    return PeerRow("ets", name, base.width, row.vote, row.best, None, answered, requests, tokens, elapsed,
                   {"search_tokens": row.stats["tokens_generated"]})


async def run_peer(name: str, problems, config: SearchConfig, backends, out: Path, proxy: CountingProxy) -> PeerRow:
    ids = {p.question: p.id for p in problems}
    if len(ids) != len(problems):
        raise SystemExit("two problems share a question: its-hub's LM sees the question only")
    lm, prm = build_peer_adapters(config, backends.policy, backends.reward, ids)
    algorithm = peer_algorithm(name, config, prm)
    random.seed(config.seed)  # its-hub resamples with `random` and numpy's global generator
    np.random.seed(config.seed)

    async def prm_scores(question: str, steps: tuple[str, ...]) -> list[float]:
        prompt = prompt_text(config, question)
        return [float(s) for s in await backends.reward.score(
            [Context(question, prompt, steps[: i + 1]) for i in range(len(steps))])]

    gate = asyncio.Semaphore(config.num_threads)

    async def one(problem):
        async with gate:
            result = await algorithm.ainfer(lm, problem.question, budget=config.width, return_response_only=False)
        scored = {}
        for content in {r["content"] for r in final_responses(result)}:
            steps = steps_of(content, get_format(config.format_name).stop[0])
            scored[steps] = await prm_scores(problem.question, steps)
        return peer_answers(problem, config, result, lambda q, steps: scored[steps])

    before, started = proxy.counts(), time.perf_counter()
    entries = await asyncio.gather(*(one(p) for p in problems))
    elapsed = time.perf_counter() - started
    requests, tokens = (a - b for a, b in zip(proxy.counts(), before))
    finished, picked = [e[0] for e in entries], [e[1] for e in entries]
    run_dir = out / f"its-hub_{name}_w{config.width}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    (run_dir / "answers.json").write_text(json.dumps(finished, indent=1), encoding="utf-8")
    (run_dir / "picked.json").write_text(json.dumps(picked, indent=1), encoding="utf-8")
    graded = evaluate_settings(finished, [VOTE, BEST], config.format_name)
    own = evaluate_settings(picked, [BEST], config.format_name)[BEST]
    label = name + (f" (beams {peer_beam_width(config.width)})" if name == "beam_search" else "")
    return PeerRow("its-hub", label, config.width, [p.correct for p in graded[VOTE].problems],
                   [p.correct for p in graded[BEST].problems], [p.correct for p in own.problems],
                   sum(len(e["model_answer"]) for e in finished) / len(finished), requests, tokens, elapsed)


async def main_async(args) -> dict:
    its_hub_modules()  # fail before a server starts
    import its_hub

    out = Path(args.out)
    base = SearchConfig.from_dict({**SearchConfig.read_yaml(args.config), **parse_overrides(args.overrides)},
                                  source="--set")
    base = base.replace(width=args.width, seed=base.seed if base.seed is not None else 1)
    problems = load_problems(args.dataset, args.problems)
    ours = [m for m in (args.methods or OURS) if m in METHODS]
    skipped = [m for m in (args.methods or OURS) if m not in METHODS]
    server = None
    if args.policy_host:
        upstream = args.policy_host
    else:
        server, upstream = start_server(base.policy_model or "qwen2.5-coder-0.5b", args.server_threads,
                                        out / "policy-server.log", args.server_engine)
    proxy = CountingProxy(upstream)
    backends = build_backends(BackendSpec(policy_hosts=(proxy.url,)), base.replace(select_method="softmax_costmodel"),
                              log=lambda m: print(m, file=sys.stderr))
    rows: list[PeerRow] = []
    try:
        for name in ours:
            rows.append(await run_ours(name, problems, base, backends, out, proxy))
            print(f"ets {name}: done in {rows[-1].time:.0f}s", file=sys.stderr)
        for name in args.peers:
            rows.append(await run_peer(name, problems, base, backends, out, proxy))
            print(f"its-hub {name}: done in {rows[-1].time:.0f}s", file=sys.stderr)
    finally:
        await backends.aclose()
        backends.close()
        proxy.close()
        if server is not None:
            stop_server(server)
    print(f"{len(problems)} problems of {args.dataset}; config {args.config}"
          f"{''.join(f' --set {item}' for item in args.overrides)}; width {base.width}; seed {base.seed}; "
          f"its-hub {its_hub.__version__}; one policy server: {'--policy_host' if args.policy_host else base.policy_model}"
          f"{'' if args.policy_host else f' (ets serve policy --engine {args.server_engine}, {args.server_threads} threads)'}")
    if skipped:
        print(f"not in bench/methods.py's METHODS, left out: {', '.join(skipped)}")
    print(render(rows))
    result = {"dataset": args.dataset, "problems": len(problems), "width": base.width,
              "its_hub": its_hub.__version__, "rows": [r.figures() for r in rows]}
    out.mkdir(parents=True, exist_ok=True)
    (out / "peers.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(f"\npeers.json and the runs in {out}")
    return result


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="asdiv[10::20]", help="problems (default: the held-out ASDiv slice)")
    ap.add_argument("--problems", type=int, default=40, help="the first N problems (default 40)")
    ap.add_argument("--config", default=os.path.relpath(ROOT / "configs/cpu_ets_qwen.yaml"))  # printed as given
    ap.add_argument("--width", type=int, default=8, help="trajectories per problem, for every method (default 8)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a key of the config for every method")
    ap.add_argument("--methods", nargs="+", choices=OURS, help=f"ours (default: {' '.join(OURS)})")
    ap.add_argument("--peers", nargs="+", choices=PEERS, default=list(DEFAULT_PEERS),
                    help=f"its-hub's (default: {' '.join(DEFAULT_PEERS)})")
    ap.add_argument("--policy_host", help="a running policy server (default: start ets serve policy --engine ets)")
    ap.add_argument("--server_engine", choices=("ets", "llamacpp"), default="ets",
                    help="the policy server started here: ours, batching requests (default), or llama-cpp-python's")
    ap.add_argument("--server_threads", type=int, default=default_threads(shared=False),
                    help="llama.cpp threads of the server started here (default: all cores, or ETS_LLAMA_THREADS)")
    ap.add_argument("--out", default=str(ROOT / "runs/peers"))
    args = ap.parse_args(argv)
    if args.width < 1 or (args.problems is not None and args.problems < 1):
        ap.error("--width and --problems must be at least 1")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    from results import recorded  # bench/ is on the path of a bench run as a script

    with recorded():
        main()
