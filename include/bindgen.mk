# Per-build bindgen run over the kernel headers rvsock uses (include/rvsock_helper.h), included
# from each module's Kbuild. Layouts depend on the kernel config, so the output is generated at
# build time into the module's object folder and never committed.
#
# Flags as in the kernel's rust/Makefile (6.12): the C flags minus those clang does not know.
rvsock_bindgen_skip_c_flags := -mno-fp-ret-in-387 -mpreferred-stack-boundary=% \
	-mskip-rax-setup -mgeneral-regs-only -msign-return-address=% \
	-mindirect-branch=thunk-extern -mindirect-branch-register \
	-mfunction-return=thunk-extern -mrecord-mcount -mabi=lp64 \
	-mindirect-branch-cs-prefix -mstack-protector-guard% -mtraceback=no \
	-mno-pointers-to-nested-functions -mno-string \
	-mno-strict-align -mstrict-align -mdirect-extern-access \
	-mexplicit-relocs -mno-check-zero-division \
	-fconserve-stack -falign-jumps=% -falign-loops=% \
	-femit-struct-debug-baseonly -fno-ipa-cp-clone -fno-ipa-sra \
	-fno-partial-inlining -fplugin-arg-arm_ssp_per_task_plugin-% \
	-fno-reorder-blocks -fno-allow-store-data-races -fasan-shadow-offset=% \
	-fzero-call-used-regs=% -fno-stack-clash-protection \
	-fno-inline-functions-called-once -fsanitize=bounds-strict \
	-fstrict-flex-arrays=% -fmin-function-alignment=% \
	-fzero-init-padding-bits=% -mno-fdpic \
	--param=% --param asan-% -fno-isolate-erroneous-paths-dereference

rvsock_libclang_maj := $(shell $(BINDGEN) $(srctree)/scripts/rust_is_available_bindgen_libclang.h 2>&1 | sed -ne 's/.*clang version \([0-9]*\).*/\1/p')
rvsock_bindgen_extra := -w --target=x86_64-linux-gnu -DMODULE -fno-builtin -D__BINDGEN__ \
	-I$(srctree)/drivers/vhost
ifdef CONFIG_INIT_STACK_ALL_ZERO
ifeq ($(shell expr $(rvsock_libclang_maj) \< 16), 1)
rvsock_bindgen_extra += -enable-trivial-auto-var-init-zero-knowing-it-will-be-removed-from-clang
endif
endif

# Layout checks: every generated type carries compile-time assertions (--rust-target 1.78 makes
# bindgen emit them as consts, not as #[test]s that a kernel build never runs) that its size,
# alignment and field offsets are clang's: a binding that disagrees with the C layout fails the
# build instead of writing over a neighbouring field. Seen on the 7.3 sanitizer kernel: 7.x
# builds with -fms-extensions and puts a tagged struct anonymously in socket_lock_t's union
# (`struct slock_owned { int owned; spinlock_t slock; };`), which bindgen leaves out, so with
# lockdep's 64-byte spinlock_t bindgen's struct sock was 64 bytes short and rvsock's writes
# after sk_lock landed 64 bytes early (sk_peer_cred overwritten: Oops in __sk_destruct). Such
# types are opaque (clang's size, no fields): that union, task_struct and sched_statistics (64-byte
# alignment that bindgen misses); rvsock reads none of their fields.
quiet_cmd_rvsock_bindgen = BINDGEN $@
      cmd_rvsock_bindgen = \
	$(BINDGEN) $< --rust-target 1.78 --use-core --with-derive-default \
		--ctypes-prefix ffi --no-debug '.*' \
		--enable-function-attribute-detection --no-doc-comments \
		--opaque-type spinlock --opaque-type xregs_state --opaque-type desc_struct \
		--opaque-type arch_lbr_state --opaque-type local_apic --opaque-type alt_instr \
		--opaque-type x86_msi_data --opaque-type x86_msi_addr_lo \
		--opaque-type socket_lock_t__bindgen_ty_1 --opaque-type task_struct --opaque-type sched_statistics \
		--blocklist-type '__kernel_s?size_t' --blocklist-type __kernel_ptrdiff_t \
		$(shell grep -Ev '^\#|^$$' $(RVSOCK_INC)/bindgen_allowlist) \
		-o $@ -- $(filter-out $(rvsock_bindgen_skip_c_flags), $(c_flags)) $(rvsock_bindgen_extra)

# A module folder deeper than the top level (tools/testing/vsock/ktest) sets RVSOCK_INC first.
RVSOCK_INC ?= $(src)/../include
$(obj)/bindings_generated.rs: $(RVSOCK_INC)/rvsock_helper.h $(RVSOCK_INC)/rvsock_shim.h $(RVSOCK_INC)/bindgen_allowlist FORCE
	$(call if_changed,rvsock_bindgen)
targets += bindings_generated.rs
export RVSOCK_BINDINGS := $(abspath $(obj))/bindings_generated.rs

# The kernel line, for include/compat.rs (the only Rust code that knows kernel versions):
# --cfg rvsock_kernel_7 on Linux 7.x and later.
rustflags-y += --check-cfg 'cfg(rvsock_kernel_7)' --check-cfg 'cfg(test)' --check-cfg 'cfg(MODULE)'
ifeq ($(shell [ "$(VERSION)" -ge 7 ] 2>/dev/null && echo y),y)
rustflags-y += --cfg rvsock_kernel_7
endif
