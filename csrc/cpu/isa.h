// Which instruction set the CPU kernels of every loss run with. Each kernel file compiles its hot
// loops once per variant (baseline x86-64, AVX2+FMA, AVX-512) with the target attributes below,
// on always_inline bodies so that each variant gets its own vectorised copy, and picks one at run
// time with have_avx512()/have_avx2().
//
// OCR_KERNELS_CPU_ISA=avx2|baseline caps the variant picked, read once per process: the tests run
// every compiled variant on one machine (CI's CPU would otherwise only exercise its best one), and
// a user can sidestep a variant that misbehaves on some CPU.
#pragma once

#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define OCR_KERNELS_ISA_DISPATCH 1
#define OCR_AVX2_TARGET __attribute__((target("avx2,fma")))
// GCC may still vectorise with 256-bit registers for an AVX-512 target (a tuning preference):
// ask for 512 (Clang has no such target option).
#if defined(__clang__)
#define OCR_AVX512_TARGET __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")))
#else
#define OCR_AVX512_TARGET \
  __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma,prefer-vector-width=512")))
#endif
#else
#define OCR_KERNELS_ISA_DISPATCH 0
#endif

namespace ocr_kernels {
namespace cpu_isa {

// 2 = AVX-512 allowed, 1 = AVX2 at most, 0 = baseline.
inline int cap() {
  static const int value = [] {
    const char* s = std::getenv("OCR_KERNELS_CPU_ISA");
    if (s == nullptr || *s == 0 || !std::strcmp(s, "auto") || !std::strcmp(s, "avx512")) return 2;
    if (!std::strcmp(s, "avx2")) return 1;
    if (!std::strcmp(s, "baseline")) return 0;
    TORCH_CHECK(false, "OCR_KERNELS_CPU_ISA must be auto, avx512, avx2 or baseline; got '", s, "'");
    return 2;
  }();
  return value;
}

#if OCR_KERNELS_ISA_DISPATCH
inline bool have_avx512() {
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
                         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                         __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cap() >= 2;
  return ok;
}
inline bool have_avx2() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cap() >= 1;
  return ok;
}
#else
inline bool have_avx512() { return false; }
inline bool have_avx2() { return false; }
#endif

// The variant the kernels run with in this process: "avx512", "avx2" or "baseline".
inline const char* name() {
  return have_avx512() ? "avx512" : have_avx2() ? "avx2" : "baseline";
}

}  // namespace cpu_isa
}  // namespace ocr_kernels
