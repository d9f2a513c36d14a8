# npzmount: mount a NumPy .npz (ZIP) archive read-only with FUSE.
# Targets: all (./npzmount), check, check-asan, demo, bench, fuzz, install, uninstall, clean.
# Honours CC, CFLAGS, CPPFLAGS, LDFLAGS, PREFIX, DESTDIR.

VERSION   := 0.1.0
PREFIX    ?= /usr/local
BINDIR    ?= $(PREFIX)/bin
MANDIR    ?= $(PREFIX)/share/man
CC        ?= cc
CFLAGS    ?= -O2 -g
WARN      := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes
PYTHON    := /usr/bin/python3

# ISA-L (libisal) ships a pkg-config file from 2.30 on; without one, link it by name.
ISAL_PC   := $(shell pkg-config --exists libisal 2>/dev/null && echo libisal)
PKGS      := fuse3 zlib libarchive $(ISAL_PC)
DEP_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
DEP_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null) $(if $(ISAL_PC),,-lisal)
ALL_CFLAGS = -std=gnu11 $(WARN) -D_FILE_OFFSET_BITS=64 -DNPZMOUNT_VERSION='"$(VERSION)"' \
             $(DEP_CFLAGS) $(CPPFLAGS) $(CFLAGS)
LIBS       = $(DEP_LIBS) -lpthread

# The core knows nothing about FUSE; tests, fuzzers and tools link it directly.
CORE_SRC  := src/io.c src/log.c src/siphash.c src/budget.c src/window.c src/sched.c \
             src/index_file.c src/zipdir.c src/namespace.c src/cache.c src/inflate_index.c \
             src/inflater.c src/inflater_zlib.c src/inflater_isal.c \
             src/reader.c src/reader_stored.c src/reader_deflate.c \
             src/reader_archive.c src/reader_broken.c src/archive_watch.c src/npz.c
FUSE_SRC  := src/fuse_ops.c src/main.c
UNIT_SRC  := $(wildcard tests/unit/*.c)

# Two build trees: the normal one, and one with ASan/UBSan for the test suite.
B         := build
BA        := build-asan
SANITIZE  := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

.PHONY: all check check-unit check-asan check-tsan check-integration-asan check-integration demo bench fuzz install uninstall \
        clean deps
all: npzmount

$(B)/%.o: src/%.c src/*.h | $(B)
	$(CC) $(ALL_CFLAGS) -c $< -o $@
$(BA)/%.o: src/%.c src/*.h | $(BA)
	$(CC) $(ALL_CFLAGS) -O1 $(SANITIZE) -c $< -o $@
$(B) $(BA):
	mkdir -p $@

$(B)/libnpzcore.a: $(CORE_SRC:src/%.c=$(B)/%.o)
	ar rcs $@ $^
$(BA)/libnpzcore.a: $(CORE_SRC:src/%.c=$(BA)/%.o)
	ar rcs $@ $^

npzmount: $(FUSE_SRC:src/%.c=$(B)/%.o) $(B)/libnpzcore.a
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $^ $(LIBS)
$(BA)/npzmount: $(FUSE_SRC:src/%.c=$(BA)/%.o) $(BA)/libnpzcore.a
	$(CC) $(ALL_CFLAGS) $(SANITIZE) $(LDFLAGS) -o $@ $^ $(LIBS)

# Unit tests: every tests/unit/NAME.c is one program linked against the core.
$(B)/unit_%: tests/unit/%.c tests/unit/*.h $(B)/libnpzcore.a
	$(CC) $(ALL_CFLAGS) -Isrc $(LDFLAGS) -o $@ $< $(B)/libnpzcore.a $(LIBS)
$(BA)/unit_%: tests/unit/%.c tests/unit/*.h $(BA)/libnpzcore.a
	$(CC) $(ALL_CFLAGS) -O1 $(SANITIZE) -Isrc $(LDFLAGS) -o $@ $< $(BA)/libnpzcore.a $(LIBS)

UNITS      = $(UNIT_SRC:tests/unit/%.c=$(B)/unit_%)
UNITS_ASAN = $(UNIT_SRC:tests/unit/%.c=$(BA)/unit_%)

# ThreadSanitizer build of the core and a many-reader stress run over it.
BT        := build-tsan
$(BT)/%.o: src/%.c src/*.h | $(BT)
	$(CC) $(ALL_CFLAGS) -O1 -fsanitize=thread -c $< -o $@
$(BT):
	mkdir -p $@
$(BT)/stress: tests/stress/stress.c $(CORE_SRC:src/%.c=$(BT)/%.o)
	$(CC) $(ALL_CFLAGS) -O1 -fsanitize=thread -Isrc $(LDFLAGS) -o $@ $^ $(LIBS)

check-tsan: $(BT)/stress
	$(PYTHON) tests/stress/make_archive.py $(BT)/stress.zip 16
	TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions=$(CURDIR)/tests/stress/tsan.supp \
	    $(BT)/stress $(BT)/stress.zip 16 300

deps:
	@scripts/install-deps

check: deps
	$(MAKE) all
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

check-integration: npzmount
	NPZMOUNT=$(CURDIR)/npzmount $(PYTEST)

# The same suite against a daemon built with ASan/UBSan. The daemon's stderr is gone once it
# detaches, so sanitizer reports go to files, and any such file fails the run.
SAN_LOG = $(CURDIR)/$(BA)/daemon-report
check-integration-asan: $(BA)/npzmount
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

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/npzmount $(DESTDIR)$(MANDIR)/man1/npzmount.1

clean:
	rm -rf $(B) $(BA) $(BT) npzmount build-fuzz

# libFuzzer harnesses: fuzz, check-fuzz, fuzz-build, fuzz-cov
include tests/fuzz/fuzz.mk
