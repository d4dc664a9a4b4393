# ippc — build, run, test.  `make run` and `make test` install what is missing first.
#
#   make            build build/bin/{ippc,ippc-controller,ippc-engine}
#   make run        start a controller + 4 MPI engines on 127.0.0.1 (foreground)
#   make test       unit + MPI + integration + contract + JS SDK tests, one summary line at the end
#   make test SAN=1 the same with AddressSanitizer + UndefinedBehaviorSanitizer
#   make unit       the cmocka unit tests only
#   make pympi      the Python MPI module (mpi4py names) on 4 MPI ranks
#   make integration  the integration tests only (K=SUBSTRING picks tests by name)
#   make js-test    the JavaScript SDK's tests only (clients/js, Node.js >= 20.10)
#   make browser    the dashboard's browser tests only (headless chromium)
#   make fuzz       every fuzz target for FUZZ_SECONDS (default 30) each
#   make bench      benchmarks (bench/), ippc side by side with IPython Parallel
#   make soak       good + hostile clients and engine churn for SOAK_SECONDS (default 180)
#   make docker-replay  docker/Dockerfile replayed in a Debian 12 chroot, then the seed
#   make lint       clang-format, cppcheck and clang-tidy over every tracked *.c/*.h
#                   (FILES="a.c b.h" for some; about 2 minutes cold, seconds after)

SAN ?= 0
CC ?= cc
PYTHON ?= /usr/bin/python3

ifeq ($(SAN),1)
BUILD := build/san
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
OPT := -O1
else
BUILD := build
SANFLAGS :=
OPT := -O2
endif

BIN := $(BUILD)/bin
OBJ := $(BUILD)/obj

WARN := -Wall -Wextra -Werror -Wno-unused-parameter
BASE_CFLAGS := -std=c11 -D_GNU_SOURCE -g $(OPT) $(WARN) $(SANFLAGS) -Iinclude -iquote common -MMD -MP
PKG = $(shell pkg-config --cflags $(1))
PKGLIBS = $(shell pkg-config --libs $(1))

COMMON_PKGS := jansson libwebsockets
SERVER_PKGS := libmicrohttpd libwebsockets jansson sqlite3
ENGINE_PKGS := libwebsockets jansson lua5.4 mpich python3-embed
CLI_PKGS := libcurl jansson libwebsockets

COMMON_SRC := $(wildcard common/*.c)
SERVER_SRC := $(filter-out server/main.c,$(wildcard server/*.c))
ENGINE_SRC := $(filter-out engine/main.c,$(wildcard engine/*.c))
CLI_SRC := $(filter-out cli/main.c,$(wildcard cli/*.c))

COMMON_OBJ := $(COMMON_SRC:%.c=$(OBJ)/%.o)
SERVER_OBJ := $(SERVER_SRC:%.c=$(OBJ)/%.o)
ENGINE_OBJ := $(ENGINE_SRC:%.c=$(OBJ)/%.o)
CLI_OBJ := $(CLI_SRC:%.c=$(OBJ)/%.o)

UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

PLUGIN_SRC := $(wildcard examples/plugins/*.c)
PLUGIN_LIB := $(PLUGIN_SRC:examples/plugins/%.c=$(BUILD)/plugins/lib%.so)

BENCH_SRC := $(wildcard bench/bench_*.c)
BENCH_BIN := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)

FUZZ_SRC := $(wildcard fuzz/fuzz_*.c)
FUZZ_BIN := $(FUZZ_SRC:fuzz/%.c=$(BUILD)/fuzz/%)
FUZZ_SECONDS ?= 30

.PHONY: all deps npm-deps run test unit pympi integration python-sdk js-test browser bench fuzz soak clean lint compile_commands \
  docker-replay
all: $(BIN)/ippc-controller $(BIN)/ippc-engine $(BIN)/ippc $(PLUGIN_LIB)

deps:
	@scripts/install-deps

# The contract tests' and browser tests' npm tools (package.json: @redocly/cli,
# openapi-typescript, typescript, playwright-core at pinned versions).  `npm ci`
# runs only when node_modules is missing or older than package-lock.json /
# package.json; after that `make test` needs no network.  (node and npm themselves come from scripts/install-deps.)  `make test`
# goes on when it fails: the contract suite then counts its npm checks as failed,
# and the browser suite fails for want of playwright-core.
NPM_STAMP := node_modules/.package-lock.json
npm-deps: $(NPM_STAMP)
$(NPM_STAMP): package-lock.json package.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# Where ippc-controller reads the dashboard (web/) and the JavaScript SDK
# (clients/js/) from unless --web-root / --sdk-root say otherwise.  Only
# server/main.o holds them: after changing them alone, `touch server/main.c`.
WEB_ROOT ?= $(CURDIR)/web
SDK_ROOT ?= $(CURDIR)/clients/js
$(OBJ)/server/main.o: BASE_CFLAGS += -DIPPC_WEB_ROOT='"$(WEB_ROOT)"' -DIPPC_SDK_ROOT='"$(SDK_ROOT)"'

$(OBJ)/common/%.o: common/%.c
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(call PKG,$(COMMON_PKGS)) -c $< -o $@
$(OBJ)/server/%.o: server/%.c
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) -iquote server $(call PKG,$(SERVER_PKGS)) -c $< -o $@
$(OBJ)/engine/%.o: engine/%.c
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) -iquote engine $(call PKG,$(ENGINE_PKGS)) -c $< -o $@
$(OBJ)/cli/%.o: cli/%.c
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) -iquote cli $(call PKG,$(CLI_PKGS)) -c $< -o $@

$(BIN)/ippc-controller: $(OBJ)/server/main.o $(SERVER_OBJ) $(COMMON_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(SANFLAGS) -o $@ $^ $(call PKGLIBS,$(SERVER_PKGS)) -lpthread -lm
$(BIN)/ippc-engine: $(OBJ)/engine/main.o $(ENGINE_OBJ) $(COMMON_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(SANFLAGS) -rdynamic -o $@ $^ $(call PKGLIBS,$(ENGINE_PKGS)) -ldl -lpthread -lm
$(BIN)/ippc: $(OBJ)/cli/main.o $(CLI_OBJ) $(COMMON_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(SANFLAGS) -o $@ $^ $(call PKGLIBS,$(CLI_PKGS)) -lpthread -lm

$(BUILD)/plugins/lib%.so: examples/plugins/%.c include/ippc/plugin.h
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) -fPIC -shared $(call PKG,mpich) -o $@ $< $(call PKGLIBS,mpich)

# Unit tests: test_engine_* link the engine runtime, test_server_* the controller
# modules, every other one only common/.
$(OBJ)/tests/%.o: tests/unit/%.c
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) -iquote server -iquote engine $(call PKG,cmocka $(SERVER_PKGS) $(ENGINE_PKGS)) -c $< -o $@
$(BUILD)/tests/test_engine_%: $(OBJ)/tests/test_engine_%.o $(ENGINE_OBJ) $(COMMON_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(SANFLAGS) -rdynamic -o $@ $^ $(call PKGLIBS,cmocka $(ENGINE_PKGS)) -ldl -lpthread -lm
$(BUILD)/tests/test_server_%: $(OBJ)/tests/test_server_%.o $(SERVER_OBJ) $(COMMON_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(SANFLAGS) -o $@ $^ $(call PKGLIBS,cmocka $(SERVER_PKGS)) -lpthread -lm
$(BUILD)/tests/test_%: $(OBJ)/tests/test_%.o $(COMMON_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(SANFLAGS) -o $@ $^ $(call PKGLIBS,cmocka $(COMMON_PKGS)) -lpthread -lm

# The Python MPI module's host program (tests/mpi/run.py runs it under mpiexec).
PYMPI_HOST := $(BUILD)/tests/pympi_host
$(OBJ)/tests/mpi/%.o: tests/mpi/%.c
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) -iquote engine $(call PKG,$(ENGINE_PKGS)) -c $< -o $@
$(PYMPI_HOST): $(OBJ)/tests/mpi/pympi_host.o $(ENGINE_OBJ) $(COMMON_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(SANFLAGS) -rdynamic -o $@ $^ $(call PKGLIBS,$(ENGINE_PKGS)) -ldl -lpthread -lm

# Benchmarks in C link the engine runtime (nd, mpi) and MPICH.
$(OBJ)/bench/%.o: bench/%.c
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) -iquote engine $(call PKG,$(ENGINE_PKGS)) -c $< -o $@
$(BUILD)/bench/%: $(OBJ)/bench/%.o $(ENGINE_OBJ) $(COMMON_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(SANFLAGS) -rdynamic -o $@ $^ $(call PKGLIBS,$(ENGINE_PKGS)) -ldl -lpthread -lm

# Benchmarks of the controller (bench_server_*) link its modules instead.
$(OBJ)/bench/bench_server_%.o: bench/bench_server_%.c
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) -iquote server $(call PKG,$(SERVER_PKGS)) -c $< -o $@
$(BUILD)/bench/bench_server_%: $(OBJ)/bench/bench_server_%.o $(SERVER_OBJ) $(COMMON_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(SANFLAGS) -o $@ $^ $(call PKGLIBS,$(SERVER_PKGS)) -lpthread -lm

# Fuzz targets (libFuzzer, clang): each parser gets FUZZ_SECONDS of fuzzing.
# The common and server sources are compiled once with the fuzzer's
# coverage (fuzzer-no-link) and linked into every target: compiling them
# again for each of the targets took most of `make fuzz`'s time.
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=address,undefined \
  -fno-sanitize-recover=undefined -Iinclude -iquote common -iquote server \
  $(call PKG,$(SERVER_PKGS))
FUZZ_OBJ := $(patsubst %.c,$(BUILD)/fuzz/obj/%.o,$(COMMON_SRC) $(SERVER_SRC))

$(BUILD)/fuzz/obj/%.o: %.c
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@

$(BUILD)/fuzz/fuzz_%: $(BUILD)/fuzz/obj/fuzz/fuzz_%.o $(FUZZ_OBJ)
	@echo "link $@"
	@clang -fsanitize=fuzzer,address,undefined -o $@ $^ $(call PKGLIBS,$(SERVER_PKGS)) -lpthread -lm

# Kept between runs (make would delete them as intermediate files).
.SECONDARY: $(FUZZ_OBJ) $(FUZZ_SRC:fuzz/%.c=$(BUILD)/fuzz/obj/fuzz/%.o)

# fuzz_elfdeps reads ELF files for the engine (engine/elfdeps.c), nothing else.
$(BUILD)/fuzz/fuzz_elfdeps: fuzz/fuzz_elfdeps.c engine/elfdeps.c engine/elfdeps.h
	@mkdir -p $(dir $@)
	clang -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined \
	  -fno-sanitize-recover=undefined -iquote engine -o $@ fuzz/fuzz_elfdeps.c engine/elfdeps.c

fuzz:
	@scripts/install-deps fuzz
	@$(MAKE) --no-print-directory -j$$(nproc) $(FUZZ_BIN)
	@for f in $(FUZZ_BIN); do n=$$(basename $$f); echo "== $$n ($(FUZZ_SECONDS) s)"; \
	  mkdir -p $(BUILD)/fuzz/corpus/$$n $(BUILD)/fuzz/crashes; \
	  $$f -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -artifact_prefix=$(BUILD)/fuzz/crashes/$$n- \
	    $(BUILD)/fuzz/corpus/$$n > $(BUILD)/fuzz/$$n.log 2>&1; rc=$$?; tail -n 3 $(BUILD)/fuzz/$$n.log; \
	  if [ $$rc -ne 0 ]; then echo "fuzz: $$n failed (see $(BUILD)/fuzz/$$n.log)"; exit 1; fi; done

# docker/Dockerfile replayed in a debootstrap chroot of Debian 12, and the seed
# run there (downloads Debian once; minutes; not part of `make test`).
docker-replay:
	@scripts/docker-replay

run: deps all
	$(BIN)/ippc cluster start -n 4 --engines=mpi

test: deps
	-@$(MAKE) --no-print-directory npm-deps
	@$(MAKE) --no-print-directory all $(UNIT_BIN) $(BENCH_BIN) $(PYMPI_HOST)
	@BUILD=$(BUILD) PYTHON=$(PYTHON) scripts/run-tests $(UNIT_BIN)

unit: all $(UNIT_BIN)
	@for t in $(UNIT_BIN); do $$t || exit 1; done

# The Python MPI module (mpi4py names) on 4 MPICH ranks: tests/mpi/run.py.
pympi: $(PYMPI_HOST)
	@BUILD=$(BUILD) $(PYTHON) tests/mpi/run.py

# The JavaScript SDK's tests (clients/js/test, Node's test runner) against real
# clusters; ends with "js-sdk: N passed, N failed".
js-test: all
	@BUILD=$(BUILD) node clients/js/test/run.mjs

# The integration suite's bench smoke test runs bench/bench_peer.py, which needs
# the limit programs (bench_loopback, bench_mpi_bcast) of $(BENCH_BIN).
integration: all $(BENCH_BIN)
	@BUILD=$(BUILD) $(PYTHON) tests/integration/run.py $(if $(K),-k $(K))

# The Python SDK's pytest suite alone (K=PATTERN picks tests, as -k does).
python-sdk: all
	@BUILD=$(BUILD) $(PYTHON) clients/python/tests/run.py $(if $(K),-k $(K))

# The dashboard (web/) in Debian's chromium, headless, through playwright-core
# (node_modules, `make npm-deps`), against a cluster of its own.
browser: deps all npm-deps
	@BUILD=$(BUILD) $(PYTHON) tests/browser/run.py

# bench_peer runs IPython Parallel beside ippc: `install-deps bench` adds Debian's
# python3-ipyparallel and python3-numpy (without them it runs the ippc half).
bench: deps all $(BENCH_BIN)
	@scripts/install-deps bench || echo "make bench: could not install python3-ipyparallel python3-numpy; bench_peer runs the ippc half"
	@BUILD=$(BUILD) scripts/run-bench

# The soak: tests/soak/soak.py --seconds N (SOAK_ARGS adds options, e.g.
# SOAK_ARGS=--attacks=all,-nbuf_bypass).  Exit status 1 when a check fails.
SOAK_SECONDS ?= 180
soak: deps all
	@BUILD=$(BUILD) $(PYTHON) tests/soak/soak.py --seconds $(SOAK_SECONDS) $(SOAK_ARGS)

# make lint: clang-format, cppcheck and clang-tidy over every tracked *.c/*.h
# (scripts/lint/run; one line per step, exit status 1 if any step fails).
# clang-tidy reads $(BUILD)/compile_commands.json, made from this Makefile's own
# recipes by a dry run (`make compile_commands` alone for editors and clangd).
LINT_UNITS := $(OBJ)/server/main.o $(SERVER_OBJ) $(OBJ)/engine/main.o $(ENGINE_OBJ) \
  $(OBJ)/cli/main.o $(CLI_OBJ) $(COMMON_OBJ) $(UNIT_SRC:tests/unit/%.c=$(OBJ)/tests/%.o) \
  $(PLUGIN_LIB) $(BENCH_SRC:bench/%.c=$(OBJ)/bench/%.o) $(FUZZ_BIN) $(OBJ)/tests/mpi/pympi_host.o
compile_commands:
	@mkdir -p $(BUILD)
	@$(MAKE) --no-print-directory -n -B $(LINT_UNITS) | scripts/lint/compile-commands > $(BUILD)/compile_commands.json.tmp
	@mv $(BUILD)/compile_commands.json.tmp $(BUILD)/compile_commands.json

lint: compile_commands
	@scripts/install-deps lint
	@BUILD=$(BUILD) scripts/lint/run

clean:
	rm -rf build

-include $(shell find $(BUILD)/obj $(BUILD)/fuzz/obj -name '*.d' 2>/dev/null)
