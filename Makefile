# Set-up in two commands: `make demo`, `make test`. Each bootstraps .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Debian packages for offscreen rendering with vtk (Mesa through EGL, or OSMesa) and for vtk's X11 libraries;
# mricron-data: the real head MRI (ch2) of the haze-removal test and benchmark.
DEB_PACKAGES := libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri libglx-mesa0 libosmesa6 libxrender1 libxt6 mricron-data

.PHONY: demo test fuzz bench system-packages clean

$(BIN)/.installed: pyproject.toml
	$(MAKE) system-packages
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

# Installs what is missing when we are root (CI, fresh machines); otherwise says what to install.
system-packages:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian packages: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else \
		echo "warning: missing Debian packages (offscreen rendering, test data): $$missing"; \
	fi

demo: $(BIN)/.installed
	$(BIN)/bigvolume demo --out demo-output

# lint-imports: the layer contracts of pyproject.toml (docs/ARCHITECTURE.md) before the tests.
test: $(BIN)/.installed
	$(BIN)/lint-imports
	$(BIN)/python -m pytest Testing -q

# The header fuzz tests with many more examples than `make test` runs (hypothesis profile "fuzz").
fuzz: $(BIN)/.installed
	BIGVOLUME_FUZZ=1 $(BIN)/python -m pytest Testing/test_fuzz_headers.py -q

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/resample.py
	$(BIN)/python benchmarks/cli.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache
