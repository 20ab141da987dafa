# rvsock top-level Makefile (the kernel build itself reads Kbuild, not this file).
#   make setup      install the toolchain and build the kernel (idempotent)
#   make modules    build the rvsock modules against the release kernel
#   make modules KDIR=/path/to/kernel/build   ... against a kernel build tree of yours
#   KERNEL=6.12|7.3 (any target): the kernel line (README "Kernel lines")
#   make check      run every test scenario plus host cargo tests
#   make check SCENARIOS="c-loopback c-nested"   run only those
#   make demo       boot VMs and show vsock traffic end to end
#   make bench      rvsock vs in-tree C benchmark (not part of check)
#   make install    [KDIR=...] [DESTDIR=...]  modules into /lib/modules/KVER/updates/rvsock,
#                   /etc/modprobe.d/rvsock.conf (rvsock replaces the in-tree stack), depmod
#   make uninstall  [KDIR=... | KVER=...] [DESTDIR=...]  takes that away again
SCENARIOS ?=
FLAVOUR ?= release

.PHONY: setup modules install uninstall check demo bench clean
setup:
	scripts/setup-toolchain.sh
	scripts/build-kernel.sh $(FLAVOUR)
	scripts/build-vsock-tests.sh $(FLAVOUR)
	scripts/build-newest-vsock-tests.sh

modules:
	$(if $(KDIR),,$(MAKE) setup FLAVOUR=$(FLAVOUR))
	scripts/build-modules.sh $(FLAVOUR)

install:
	scripts/install.sh install

uninstall:
	scripts/install.sh uninstall

check:
	scripts/check.sh $(SCENARIOS)

demo:
	scripts/demo.sh

bench:
	scripts/bench.sh

clean:
	rm -rf build
