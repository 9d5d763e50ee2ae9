#ifndef PAGODA_KERNELS_H
#define PAGODA_KERNELS_H
// Small C helpers for the kernels: only what Swift cannot express (CPU hints, intrinsics that do not import).

/// A spin-wait hint for busy loops.
static inline void pagoda_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

#endif
