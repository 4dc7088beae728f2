# The two commands of the README:
#   make demo   install everything and build the bundled real sample into runs/demo
#   make test   install everything and run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN ?= runs/demo
SAMPLE := examples/biomedica/000000.tar examples/elife-01222 examples/elife-00230

.PHONY: install demo test benchmarks constraints clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[all,dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/microvqa-pp build $(SAMPLE) --out $(RUN)

test: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

# Each script prints its figures; benchmarks/README.md records them with the machine.
# graph_scale.py and signals.py take the longest (minutes to an hour on a 2-core CPU).
BENCHMARKS = ingest agent_client signals graph_scale blooms mcq_offline mcq_shortcuts build eval_throughput

benchmarks: install
	@for name in $(BENCHMARKS); do \
		echo "== benchmarks/$$name.py"; \
		PYTHONPATH=src HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/$$name.py || exit 1; \
	done

constraints: install
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^microvqa' > constraints.txt.new
	@echo "review constraints.txt.new, then move it over constraints.txt"

clean:
	rm -rf $(VENV) runs .pytest_cache
