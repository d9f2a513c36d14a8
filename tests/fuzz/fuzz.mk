# libFuzzer harnesses for the npzmount core. Included from the top Makefile, which defines
# CORE_SRC, PKGS, DEP_CFLAGS, DEP_LIBS and PYTHON (until then:
#     make -f Makefile -f tests/fuzz/fuzz.mk check-fuzz).
#
#   make fuzz          build, seed, then run every harness for $(FUZZ_SECONDS) s (default 60)
#                      on the corpus build-fuzz/corpus-NAME (kept between runs)
#   make check-fuzz    build, replay tests/fuzz/regressions/fuzz_NAME/*, then a 10 s smoke run
#   make fuzz-build    only build build-fuzz/fuzz_NAME
#   make fuzz-cov      line coverage of the core reached by corpus + seeds (llvm-cov report;
#                      build-fuzz/cov/NAME.txt has the annotated sources)
#
# Harnesses: fuzz_zipdir (archives), fuzz_inflate (deflate streams), fuzz_index (saved index
# files; its seeds are real index files written by build-fuzz/gen_index_seeds through ixf_save).
# Crashes land in build-fuzz/artifacts-NAME/; the log of each run is build-fuzz/fuzz_NAME.log.
# A crash worth keeping goes to tests/fuzz/regressions/fuzz_NAME/ (small files, committed), so
# that check-fuzz replays it. Reproduce one by hand with
#     build-fuzz/fuzz_NAME FILE
# clang (with libFuzzer) comes from scripts/install-deps --fuzz, run by every target here.
#
# Known core bugs can be tolerated while their fix is pending, so that fuzzing goes on past
# them: NPZ_FUZZ_ALLOW=decode-eio,archive-cached make fuzz   (see tests/fuzz/fuzz_common.h);
# Every harness runs under a memory budget: the core bounds its memory by its options
# (cache, index_mem, decoder_mem), so -rss_limit_mb fails any input that gets past them, and
# -malloc_limit_mb any single allocation that an archive's claims could inflate.

FUZZ_CC         ?= clang
FUZZ_SECONDS    ?= 60
FUZZ_SMOKE      ?= 10
FUZZ_RSS_MB     ?= 768
FUZZ_TIMEOUT    ?= 60
FUZZ_FLAGS      ?=
FZ              := build-fuzz
FUZZ_DIR        := tests/fuzz
FUZZ_NAMES      := zipdir inflate index
FUZZ_MAXLEN_zipdir  := 1048576
FUZZ_MAXLEN_inflate := 262144
FUZZ_MAXLEN_index   := 262144
FUZZ_DICT_zipdir    := -dict=$(FZ)/zipdir.dict
FUZZ_DICT_inflate   :=
FUZZ_DICT_index     :=
# Per-harness options. The index loader may only allocate in proportion to its input (at most
# FUZZ_MAXLEN_index), so any single allocation past 16 MiB is a bug.
FUZZ_OPTS_index     := -malloc_limit_mb=16
FUZZ_OPTS_zipdir    := -malloc_limit_mb=96
FUZZ_OPTS_inflate   := -malloc_limit_mb=64
FUZZ_PYTHON     ?= $(if $(PYTHON),$(PYTHON),/usr/bin/python3)

FUZZ_SAN    := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_CFLAGS := -std=gnu11 -g -O1 -Wall -Wextra -D_FILE_OFFSET_BITS=64 \
               -DNPZMOUNT_VERSION='"fuzz"' $(FUZZ_SAN)
FUZZ_BINS   := $(FUZZ_NAMES:%=$(FZ)/fuzz_%)
FUZZ_OBJS   := $(CORE_SRC:src/%.c=$(FZ)/core/%.o)

# libFuzzer options shared by every run. -close_fd_mask=2 silences the core's per-member log
# lines (libFuzzer, the sanitizers and the harnesses' own check failures keep a private copy
# of stderr, so crash reports still show).
FUZZ_RUN_OPTS = -rss_limit_mb=$(FUZZ_RSS_MB) -timeout=$(FUZZ_TIMEOUT) -close_fd_mask=2 \
                -print_final_stats=1 $(FUZZ_FLAGS)

.PHONY: fuzz check-fuzz fuzz-build fuzz-deps fuzz-seeds fuzz-cov
.SECONDARY: $(FUZZ_OBJS)

fuzz-deps:
	@scripts/install-deps --fuzz

$(FZ)/core:
	mkdir -p $@

# Core objects: instrumented for coverage (fuzzer-no-link) and the sanitizers.
$(FZ)/core/%.o: src/%.c src/*.h | fuzz-deps $(FZ)/core
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link $(DEP_CFLAGS) -c $< -o $@

$(FZ)/fuzz_%: $(FUZZ_DIR)/fuzz_%.c $(FUZZ_DIR)/fuzz_common.h $(FUZZ_OBJS) | fuzz-deps
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -Isrc $(DEP_CFLAGS) -o $@ $< \
	    $(FUZZ_OBJS) $(DEP_LIBS) -lz -lpthread

fuzz-build: $(FUZZ_BINS)

# The index seeds are real index files, so ixf_save itself writes them.
$(FZ)/gen_index_seeds: $(FUZZ_DIR)/gen_index_seeds.c $(FUZZ_OBJS) | fuzz-deps
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -Isrc $(DEP_CFLAGS) -o $@ $< \
	    $(FUZZ_OBJS) $(DEP_LIBS) -lz -lpthread

fuzz-seeds: $(FUZZ_DIR)/gen_seeds.py $(FZ)/gen_index_seeds | fuzz-deps
	@mkdir -p $(FZ)
	@$(FUZZ_PYTHON) $(FUZZ_DIR)/gen_seeds.py $(FZ)
	@$(FZ)/gen_index_seeds $(FZ)

# $(call fuzz_run,NAME,SECONDS): runs one harness on its corpus and seeds, then prints one
# summary line. Leaves the exit status in the shell variable st.
define fuzz_run
mkdir -p $(FZ)/corpus-$(1) $(FZ)/artifacts-$(1); \
$(FZ)/fuzz_$(1) $(FUZZ_RUN_OPTS) $(FUZZ_OPTS_$(1)) -max_len=$(FUZZ_MAXLEN_$(1)) $(FUZZ_DICT_$(1)) \
    -max_total_time=$(2) \
    -artifact_prefix=$(FZ)/artifacts-$(1)/ $(FZ)/corpus-$(1) $(FZ)/seeds-$(1) \
    > $(FZ)/fuzz_$(1).log 2>&1; \
rc=$$?; \
runs=$$(sed -n 's/^stat::number_of_executed_units: *//p' $(FZ)/fuzz_$(1).log | tail -n 1); \
eps=$$(sed -n 's/^stat::average_exec_per_sec: *//p' $(FZ)/fuzz_$(1).log | tail -n 1); \
secs=$$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' $(FZ)/fuzz_$(1).log | tail -n 1); \
cov=$$(grep -o 'cov: [0-9]*' $(FZ)/fuzz_$(1).log | tail -n 1 | cut -d' ' -f2); \
ft=$$(grep -o 'ft: [0-9]*' $(FZ)/fuzz_$(1).log | tail -n 1 | cut -d' ' -f2); \
corp=$$(ls $(FZ)/corpus-$(1) | wc -l); \
if [ $$rc -eq 0 ]; then res=ok; else res="FAILED (exit $$rc; see $(FZ)/fuzz_$(1).log and $(FZ)/artifacts-$(1)/)"; st=1; fi; \
echo "fuzz_$(1): $${runs:-?} runs in $${secs:-?} s ($${eps:-?}/s), cov $${cov:-?}, ft $${ft:-?}, corpus $$corp files: $$res"; \
if [ $$rc -ne 0 ]; then grep -m1 -A25 -E 'ERROR: |==FUZZ CHECK|runtime error' $(FZ)/fuzz_$(1).log | grep -v ' in fuzzer::' | head -n 30; fi
endef

# $(call fuzz_replay,NAME): runs every regression input of one harness once, each on its own
# (libFuzzer would stop at the first failing file), and reports the ones that still fail.
define fuzz_replay
n=0; bad=0; : > $(FZ)/replay_$(1).log; \
for f in $$(find $(FUZZ_DIR)/regressions/fuzz_$(1) -type f ! -name '*.md' ! -name '.*' 2>/dev/null | sort); do \
    n=$$((n + 1)); \
    if ! $(FZ)/fuzz_$(1) $(FUZZ_RUN_OPTS) $(FUZZ_OPTS_$(1)) -max_len=$(FUZZ_MAXLEN_$(1)) $$f \
            > $(FZ)/replay.tmp 2>&1; then \
        bad=$$((bad + 1)); st=1; \
        echo "fuzz_$(1): regression still fails: $$f"; \
        grep -m1 -A12 -E 'ERROR: |==FUZZ CHECK|runtime error' $(FZ)/replay.tmp | grep -v ' in fuzzer::' | head -n 14; \
    fi; \
    cat $(FZ)/replay.tmp >> $(FZ)/replay_$(1).log; \
done; \
rm -f $(FZ)/replay.tmp; \
echo "fuzz_$(1): $$n regression input(s) replayed, $$bad failing (log: $(FZ)/replay_$(1).log)"
endef

fuzz: fuzz-build fuzz-seeds
	@st=0; \
	$(foreach n,$(FUZZ_NAMES),$(call fuzz_run,$(n),$(FUZZ_SECONDS));) \
	exit $$st

check-fuzz: fuzz-build fuzz-seeds
	@st=0; \
	$(foreach n,$(FUZZ_NAMES),$(call fuzz_replay,$(n));) \
	$(foreach n,$(FUZZ_NAMES),$(call fuzz_run,$(n),$(FUZZ_SMOKE));) \
	exit $$st

# Coverage: the same harnesses built with clang's source-based coverage instead of the
# sanitizers, run once over corpus and seeds (known bugs tolerated, so no input stops the run).
FUZZ_LLVM_COV      ?= $(firstword $(wildcard /usr/bin/llvm-cov-14 /usr/bin/llvm-cov) llvm-cov)
FUZZ_LLVM_PROFDATA ?= $(firstword $(wildcard /usr/bin/llvm-profdata-14 /usr/bin/llvm-profdata) llvm-profdata)

$(FZ)/cov/fuzz_%: $(FUZZ_DIR)/fuzz_%.c $(FUZZ_DIR)/fuzz_common.h $(CORE_SRC) src/*.h | fuzz-deps
	@mkdir -p $(FZ)/cov
	$(FUZZ_CC) -std=gnu11 -g -O1 -D_FILE_OFFSET_BITS=64 -DNPZMOUNT_VERSION='"fuzz"' \
	    -fsanitize=fuzzer -fprofile-instr-generate -fcoverage-mapping -Isrc $(DEP_CFLAGS) \
	    -o $@ $< $(CORE_SRC) $(DEP_LIBS) -lz -lpthread

fuzz-cov: $(FUZZ_NAMES:%=$(FZ)/cov/fuzz_%) fuzz-seeds
	@for n in $(FUZZ_NAMES); do \
	    mkdir -p $(FZ)/corpus-$$n; \
	    rm -f $(FZ)/cov/$$n.profraw; \
	    NPZ_FUZZ_ALLOW=decode-eio,archive-cached LLVM_PROFILE_FILE=$(FZ)/cov/$$n.profraw \
	        $(FZ)/cov/fuzz_$$n -runs=0 -close_fd_mask=2 $(FZ)/corpus-$$n $(FZ)/seeds-$$n \
	        > $(FZ)/cov/$$n.log 2>&1 || echo "fuzz-cov: $$n: run failed (see $(FZ)/cov/$$n.log)"; \
	    $(FUZZ_LLVM_PROFDATA) merge -o $(FZ)/cov/$$n.profdata $(FZ)/cov/$$n.profraw || exit 1; \
	    echo "== fuzz_$$n: coverage of the core"; \
	    $(FUZZ_LLVM_COV) report $(FZ)/cov/fuzz_$$n -instr-profile=$(FZ)/cov/$$n.profdata \
	        $(CORE_SRC) | sed '/^-*$$/d'; \
	    $(FUZZ_LLVM_COV) show $(FZ)/cov/fuzz_$$n -instr-profile=$(FZ)/cov/$$n.profdata \
	        $(CORE_SRC) > $(FZ)/cov/$$n.txt; \
	done
