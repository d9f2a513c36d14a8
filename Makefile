# npzmount: mount a NumPy .npz (ZIP) archive read-only with FUSE.
# Targets: all (./npzmount), check, check-asan, demo, bench, fuzz, install, uninstall, clean.
# Honours CC, CFLAGS, CPPFLAGS, LDFLAGS, PREFIX, DESTDIR, PYTHONDIR.

VERSION   := 0.1.0
PREFIX    ?= /usr/local
BINDIR    ?= $(PREFIX)/bin
MANDIR    ?= $(PREFIX)/share/man
# Debian's python3 searches $(PREFIX)/lib/python3.X/dist-packages for PREFIX /usr/local and
# /usr (not .../python3/dist-packages under /usr/local); evaluated only by (un)install.
PYVER      = $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
PYTHONDIR ?= $(PREFIX)/lib/python$(PYVER)/dist-packages
PY_SRC    := $(wildcard python/npzmount/*.py)
CC        ?= cc
CFLAGS    ?= -O2 -g
WARN      := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes
PYTHON    := /usr/bin/python3

# ISA-L (libisal) ships a pkg-config file from 2.30 on; without one, link it by name.
ISAL_PC   := $(shell pkg-config --exists libisal 2>/dev/null && echo libisal)
# The core is compiled without fuse3's include path: the build itself proves that only the
# adapter (FUSE_SRC) knows about FUSE.
# libcurl and libarchive: headers only; src/http.c and src/reader_archive.c load them when an
# archive needs them (remote, or members of other methods), so that a mount of a numpy archive
# does not start a dozen libraries it never uses.
CORE_PKGS := zlib libdeflate libarchive libcurl $(ISAL_PC)
PKGS      := fuse3 $(CORE_PKGS)
LINK_PKGS := $(filter-out libcurl libarchive,$(PKGS))
CORE_DEP_CFLAGS = $(shell pkg-config --cflags $(CORE_PKGS) 2>/dev/null)
DEP_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
DEP_LIBS   = $(shell pkg-config --libs $(LINK_PKGS) 2>/dev/null) $(if $(ISAL_PC),,-lisal)
BASE_CFLAGS = -std=gnu11 $(WARN) -D_FILE_OFFSET_BITS=64 -DNPZMOUNT_VERSION='"$(VERSION)"' \
             -MMD -MP $(CPPFLAGS) $(CFLAGS)
ALL_CFLAGS = $(BASE_CFLAGS) $(DEP_CFLAGS)
LIBS       = $(DEP_LIBS) -lpthread

# The core knows nothing about FUSE; tests, fuzzers and tools link it directly.
FUSE_SRC  := src/fuse_ops.c src/main.c src/autounmount.c
CORE_SRC  := $(filter-out $(FUSE_SRC),$(sort $(wildcard src/*.c)))
UNIT_SRC  := $(wildcard tests/unit/*.c)

# Three build trees: normal, ASan/UBSan and TSan. Each has one compile rule, made by
# tree_rules below; header dependencies come from the compiler (-MMD), in TREE/*.d.
B         := build
BA        := build-asan
BT        := build-tsan
SANITIZE  := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
FLAGS_$(B)  :=
FLAGS_$(BA) := -O1 $(SANITIZE)
FLAGS_$(BT) := -O1 -fsanitize=thread

.PHONY: all check check-unit check-asan check-tsan check-integration-asan check-integration demo bench fuzz install uninstall \
        clean deps
all: npzmount

# $(call tree_rules,TREE): the compile rules of one build tree. Core objects see only the core's
# dependencies' headers; the adapter's also see fuse3's.
define tree_rules
$(1)/%.o: src/%.c | $(1)
	$$(CC) $$(BASE_CFLAGS) $$(if $$(filter $$(FUSE_SRC),$$<),$$(DEP_CFLAGS),$$(CORE_DEP_CFLAGS)) \
	    $$(FLAGS_$(1)) -c $$< -o $$@
$(1)/libnpzcore.a: $$(CORE_SRC:src/%.c=$(1)/%.o)
	ar rcs $$@ $$^
$(1)/unit_%: tests/unit/%.c $(1)/libnpzcore.a
	$$(CC) $$(ALL_CFLAGS) $$(FLAGS_$(1)) -Isrc $$(LDFLAGS) -o $$@ $$< $(1)/libnpzcore.a $$(LIBS)
$(1)/remote_cat: tests/tools/remote_cat.c $(1)/libnpzcore.a
	$$(CC) $$(ALL_CFLAGS) $$(FLAGS_$(1)) -Isrc $$(LDFLAGS) -o $$@ $$< $(1)/libnpzcore.a $$(LIBS)
$(1):
	mkdir -p $$@
endef
$(foreach t,$(B) $(BA) $(BT),$(eval $(call tree_rules,$(t))))
-include $(wildcard $(B)/*.d $(BA)/*.d $(BT)/*.d)

npzmount: $(FUSE_SRC:src/%.c=$(B)/%.o) $(B)/libnpzcore.a
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $^ $(LIBS)
$(BA)/npzmount: $(FUSE_SRC:src/%.c=$(BA)/%.o) $(BA)/libnpzcore.a
	$(CC) $(ALL_CFLAGS) $(SANITIZE) $(LDFLAGS) -o $@ $^ $(LIBS)

UNITS      = $(UNIT_SRC:tests/unit/%.c=$(B)/unit_%)
UNITS_ASAN = $(UNIT_SRC:tests/unit/%.c=$(BA)/unit_%)

# ThreadSanitizer build of the core and a many-reader stress run over it.
$(BT)/stress: tests/stress/stress.c $(BT)/libnpzcore.a
	$(CC) $(ALL_CFLAGS) $(FLAGS_$(BT)) -Isrc $(LDFLAGS) -o $@ $^ $(LIBS)

check-tsan: $(BT)/stress
	$(PYTHON) tests/stress/make_archive.py $(BT)/stress.zip 16
	TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions=$(CURDIR)/tests/stress/tsan.supp \
	    $(BT)/stress $(BT)/stress.zip 16 300

deps:
	@scripts/install-deps

# Everything the checks run is built first, on every CPU; the checks themselves run one after
# the other (several of them measure memory or time out on a loaded machine).
CHECK_BUILDS = all $(UNITS) $(UNITS_ASAN) $(BA)/npzmount $(BT)/stress $(B)/remote_cat \
               $(BT)/remote_cat fuzz-build

check: deps
	$(MAKE) -j$(shell nproc) $(CHECK_BUILDS)
	$(MAKE) check-unit
	$(MAKE) check-asan
	$(MAKE) check-tsan
	$(MAKE) check-fuzz
	$(MAKE) check-integration
	$(MAKE) check-integration-asan

check-unit: $(UNITS)
	@tests/run-unit $(UNITS)

check-asan: $(UNITS_ASAN) $(BA)/npzmount
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	    tests/run-unit $(UNITS_ASAN)

PYTEST = $(PYTHON) -m pytest -q -p no:cacheprovider tests/integration

check-integration: npzmount $(B)/remote_cat $(BT)/remote_cat
	NPZMOUNT=$(CURDIR)/npzmount $(PYTEST)

# The same suite against a daemon built with ASan/UBSan. The daemon's stderr is gone once it
# detaches, so sanitizer reports go to files, and any such file fails the run.
SAN_LOG = $(CURDIR)/$(BA)/daemon-report
check-integration-asan: $(BA)/npzmount $(B)/remote_cat
	rm -f $(SAN_LOG).*
	NPZMOUNT=$(CURDIR)/$(BA)/npzmount \
	ASAN_OPTIONS=log_path=$(SAN_LOG):detect_leaks=1 \
	UBSAN_OPTIONS=log_path=$(SAN_LOG):print_stacktrace=1:halt_on_error=1 $(PYTEST)
	@if ls $(SAN_LOG).* >/dev/null 2>&1; then cat $(SAN_LOG).*; exit 1; fi

demo: deps all
	@scripts/demo

bench: all
	@scripts/install-deps --bench
	@scripts/bench

install: npzmount
	install -D -m 0755 npzmount $(DESTDIR)$(BINDIR)/npzmount
	install -D -m 0644 man/npzmount.1 $(DESTDIR)$(MANDIR)/man1/npzmount.1
	install -d $(DESTDIR)$(PYTHONDIR)/npzmount
	install -m 0644 $(PY_SRC) $(DESTDIR)$(PYTHONDIR)/npzmount/

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/npzmount $(DESTDIR)$(MANDIR)/man1/npzmount.1
	rm -f $(addprefix $(DESTDIR)$(PYTHONDIR)/npzmount/,$(notdir $(PY_SRC)))
	rm -rf $(DESTDIR)$(PYTHONDIR)/npzmount/__pycache__
	rmdir --ignore-fail-on-non-empty $(DESTDIR)$(PYTHONDIR)/npzmount 2>/dev/null || true

clean:
	rm -rf $(B) $(BA) $(BT) npzmount build-fuzz

# libFuzzer harnesses: fuzz, check-fuzz, fuzz-build, fuzz-cov
include tests/fuzz/fuzz.mk
