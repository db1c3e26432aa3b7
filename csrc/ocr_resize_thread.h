// What one CUDA block (CTA) of the fused-upsampling kernels computes on their fast path
// (csrc/cuda/ocr_resize_kernel.cu), written against a Block (thread index, block size, barrier,
// barrier-with-OR, barrier-with-count) so that the CPU test hook `_pixelwise_seg_ocr_resized` runs these same
// functions with one CPU thread per CUDA thread and a real barrier (csrc/cpu/ocr_resize.cpp):
// CI checks the GPU's code, its barriers included, against the float64 reference.
//
// The per-pixel math is ocr_thread.h's thread_forward / thread_backward (class lists IC-first,
// PPT = kThreadPixels pixels a thread); the grid and weights are ocr_resize_pixel.h's resize_tap.
//
// Layout of a block's work:
// - threads own "slots": a slot is up to PPT consecutive output columns of one cell column c (the
//   output columns whose left tap is c; ceil(width / PPT) slots a cell, tables in shared memory
//   built once per block), so every pixel of a thread shares its two source columns (c, upper(c))
//   and its gradient reduces along x in registers;
// - one output row at a time: its C+1 logits pre-interpolated along y into shared memory
//   R[k][j] = l0·z[i0][j] + l1·z[i1][j] (w values a class), so a logit costs two shared loads and
//   a subtraction (one each per class for the thread's PPT pixels) and a multiply-add:
//   out = R[c] + lx1·(R[c1] − R[c]) (resize_lerp);
// - forward: each block takes a contiguous range of output rows (the class list is rebuilt only
//   when the image changes);
// - backward: one block per cell row (the output rows whose top tap is source row c), each output
//   pixel's dL/dz computed once. A thread sums its pixels' gradient times lx0 and lx1 for each
//   class as thread_backward produces it; every kResizeClassChunk classes the block combines the
//   slots of each source column in slot order and adds them, times ly0 / ly1, into the cell's two
//   shared-memory rows (top: source row c, bottom: upper(c)); at the end of the cell it writes them
//   to a [2, B, C+1, h, w] buffer, and a last pass sums, per low-resolution logit, its top entry and
//   the bottom entries that reach it, in a fixed order. No float atomics: bitwise reproducible.
//   ocr_loss (no cross-entropy) compacts a row whose slots with a gradient pixel fit in fewer
//   warps than the block has: only those warps run thread_backward, one such slot a thread by
//   rank, and they combine the ranks' sums (resize_backward_compact); a row without a gradient is
//   skipped.
// A shape whose shared memory exceeds kResizeFastSmem takes the generic path of
// ocr_resize_pixel.h (any C+1).
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "ocr_resize_pixel.h"
#include "ocr_thread.h"

namespace ocr {

constexpr int kResizeClassChunk = 4;     // classes per combine of the backward (a power of 2)
constexpr int kResizeMaxThreads = 256;   // block size cap; wider rows loop over slot groups
constexpr size_t kResizeFastSmem = 96 * 1024;  // the fast path's shared-memory limit (bytes)
constexpr int kResizeUnrolledSlots = 2;  // slots a column's combine sums unrolled (8 pixels)

// The fast path's geometry for one call (host: the launcher and the hook work it out alike).
struct ResizePlan {
  int slots;     // Σ over cell columns of ceil(cell width / kThreadPixels)
  int threads;   // block size: slots rounded up to a warp, at most kResizeMaxThreads
  int groups;    // slot groups a block walks in turn: ceil(slots / threads)
  size_t smem_fwd, smem_bwd;  // bytes of dynamic shared memory
  bool fast;     // both fit kResizeFastSmem
};

// Shared memory (in bytes) of a block: R [C1, w], and for the backward the top/bottom rows
// [2, C1, w] and the chunk [kResizeClassChunk, 2, threads], in acc_t; then ints: the class list
// (C1 + 1: nic, classes), the tables of resize_tables.
OCR_HD size_t resize_r_size(int64_t C1, int64_t w, size_t acc_size) {
  // R also holds resize_tables' scratch (3w + 1 ints) before the first row is staged
  const size_t r = (size_t)(C1 * w), scratch = ((size_t)(3 * w + 1) * sizeof(int) + acc_size - 1) / acc_size;
  return r > scratch ? r : scratch;
}

OCR_HD size_t resize_smem(int64_t C1, int64_t w, int slots, int threads, bool backward,
                          size_t acc_size) {
  size_t acc = resize_r_size(C1, w, acc_size);
  if (backward) acc += (size_t)(2 * C1 * w) + (size_t)kResizeClassChunk * 2 * threads;
  // (first: w + 1; the backward's rk, one a column, and span)
  const size_t ints = (size_t)(C1 + 1) + 2 * (size_t)slots + (size_t)w + 1 +
                      (backward ? (size_t)w + 2 : 0);
  return acc * acc_size + sizeof(int) * ints;
}

template <typename acc_t>
OCR_HD ResizePlan resize_plan(int64_t C1, int64_t h, int64_t w, int64_t W, bool align_corners) {
  const ResizeAxis<acc_t> ax = resize_axis<acc_t>(w, W, align_corners);
  int64_t slots = 0, run = 0, prev = -1;
  for (int64_t x = 0; x <= W; ++x) {
    const int64_t c = x < W ? resize_tap(ax, x).i0 : -1;
    if (c != prev && run > 0) slots += (run + kThreadPixels - 1) / kThreadPixels;
    run = c == prev ? run + 1 : 1;
    prev = c;
  }
  ResizePlan P;
  const int64_t t = (slots + 31) / 32 * 32;
  P.threads = (int)(t < kResizeMaxThreads ? t : kResizeMaxThreads);
  P.slots = slots < (int64_t(1) << 24) ? (int)slots : 0;
  P.groups = (int)((slots + P.threads - 1) / P.threads);
  P.smem_fwd = resize_smem(C1, w, P.slots, P.threads, false, sizeof(acc_t));
  P.smem_bwd = resize_smem(C1, w, P.slots, P.threads, true, sizeof(acc_t));
  // (the tables pack output columns in 28 bits; the gather indexes a plane in 32)
  P.fast = P.slots > 0 && P.smem_bwd <= kResizeFastSmem && W < (int64_t(1) << 28) &&
           h * w < (int64_t(1) << 31);
  return P;
}

// The block's shared memory, carved as resize_smem counts it. Tables (resize_tables): slot s =
// {2c + (upper(c) − c), 8·(first output column) + valid pixels} of its segment of cell column c
// (upper(c) is c or c + 1; at most kThreadPixels = 4 pixels); first[c], cell column c's first
// slot (first[w] = slots); cx0, cn: resize_tables' scratch, in R. Backward: rk, column j's chunk
// columns this row (resize_column_ranges), and the thread's share of the combine's (column,
// class) items, set once a block (resize_combine_lane: a division, not one a flush).
template <typename acc_t>
struct ResizeSmem {
  acc_t *R, *top, *bot, *chunk;
  int *list, *first, *cx0, *cn, *slot, *rk, *span;
  int comb_j0, comb_m0, comb_per;
};

template <typename acc_t>
OCR_HD ResizeSmem<acc_t> resize_smem_parts(void* smem, int64_t C1, int64_t w, const ResizePlan& P,
                                           bool backward) {
  ResizeSmem<acc_t> m;
  acc_t* a = static_cast<acc_t*>(smem);
  m.R = a;
  a += resize_r_size(C1, w, sizeof(acc_t));
  m.top = m.bot = m.chunk = nullptr;
  if (backward) {
    m.top = a;
    m.bot = a + C1 * w;
    m.chunk = a + 2 * C1 * w;
    a += 2 * C1 * w + (int64_t)kResizeClassChunk * 2 * P.threads;
  }
  m.list = reinterpret_cast<int*>(a);
  m.slot = m.list + C1 + 1;
  m.cx0 = reinterpret_cast<int*>(m.R);  // scratch of resize_tables
  m.cn = m.cx0 + w;
  m.first = m.slot + 2 * (int64_t)P.slots;
  m.rk = backward ? m.first + w + 1 : nullptr;
  m.span = backward ? m.rk + w : nullptr;
  m.comb_j0 = m.comb_m0 = 0;
  m.comb_per = 1;
  return m;
}

// The slot table and first, once per block: each thread the ranges of its cell columns, one
// thread the slots' prefix sum, then each cell column's thread its slots.
template <typename acc_t, typename Block>
OCR_HD void resize_tables(const Block& blk, const ResizeAxis<acc_t>& ax, const ResizeSmem<acc_t>& S) {
  const int w = (int)ax.in;
  for (int c = blk.tid; c < w; c += blk.n) {
    int64_t x0, n;
    resize_cell_range(ax, c, &x0, &n);
    S.cx0[c] = (int)x0;
    S.cn[c] = (int)n;
  }
  blk.sync();
  if (blk.tid == 0) {
    int f = 0;
    for (int c = 0; c < w; ++c) {
      S.first[c] = f;
      f += (S.cn[c] + kThreadPixels - 1) / kThreadPixels;
    }
    S.first[w] = f;
  }
  blk.sync();
  for (int c = blk.tid; c < w; c += blk.n) {
    const int up = (int)resize_upper(ax, c);
    for (int s = S.first[c], x = S.cx0[c], left = S.cn[c]; s < S.first[c + 1];
         ++s, x += kThreadPixels, left -= kThreadPixels) {
      int* e = S.slot + 2 * s;
      e[0] = 2 * c + (up - c);
      e[1] = 8 * x + (left < kThreadPixels ? left : kThreadPixels);
    }
  }
  blk.sync();
}

// A pixel's logit from its row's two staged columns: r0 + l1·(r1 − r0) (= l0·r0 + l1·r1 with
// l0 = 1 − l1, resize_tap's weights, to rounding): one subtraction a class shared by the thread's
// pixels, then one multiply-add a pixel. The forward and the backward both call it, so the
// backward recomputes the forward's logits bitwise.
template <typename acc_t>
OCR_HD acc_t resize_lerp(acc_t r0, acc_t r1, acc_t l1) { return r0 + l1 * (r1 - r0); }

// Class k's row of R from the thread's left tap: from the byte offset k·(row bytes) in 32 bits,
// one multiply-add (nvcc formed k·w + c, then its address, and again for the right tap: four
// integer instructions a class for two loads of the same row).
template <typename acc_t>
OCR_HD const acc_t* resize_row(const acc_t* R0, unsigned row_bytes, int k) {
  return reinterpret_cast<const acc_t*>(reinterpret_cast<const char*>(R0) +
                                        (unsigned)k * row_bytes);
}

// The OC argmax of each pixel whose OC and IC maxima tie (rare: equal logits), for merge_runs:
// the first OC class whose logit equals the run's maximum (the argmax Run<acc_t, true> keeps).
template <typename acc_t, int PPT, typename Z>
OCR_HD void resize_oc_tie_args(const Z& z, const ThreadArgs<acc_t>& T, Run<acc_t, false>* oc,
                               const Run<acc_t, true>* ic) {
  const int* ocl = T.cls + T.nic;
#pragma unroll
  for (int i = 0; i < PPT; ++i) {
    // (an all −inf run never updated its argmax: 0)
    if (!(oc[i].m == ic[i].m && oc[i].m > neg_inf<acc_t>())) continue;
#pragma unroll 1
    for (int j = 0; j < T.noc; ++j) {
      if (z(ocl[j], i) == oc[i].m) {
        oc[i].arg = ocl[j];
        break;
      }
    }
  }
}

// ocr_thread.h's thread_forward on a slot's pixels, which share their two taps: class k's logits
// are r0 + lx1[i]·d (resize_lerp: r0 = R[k][c], d = R[k][c1] − r0), and the poison that makes a
// pixel's loss NaN where one of its logits is NaN or infinite is one term a class for the slot,
// d·0, instead of one a pixel (4 FFMA a class, ~8 % of the loop): a logit is non-finite exactly
// where r0 or d is (finite r0, d give a finite r0 + l·d for l in [0, 1], to an overflow near
// FLT_MAX), and a non-finite r0 makes d non-finite. Otherwise thread_forward's math, in its order.
template <typename acc_t, int GROUP, bool CE, int PPT>
OCR_HD void resize_thread_forward(const acc_t* R0, unsigned row_bytes, int dc, const acc_t* lx1,
                                  const ThreadArgs<acc_t>& T, const int64_t* target,
                                  int64_t ignore_index, acc_t* loss, acc_t* ce) {
  auto z = [&](int k, int i) -> acc_t {
    const acc_t* r = resize_row(R0, row_bytes, k);
    return resize_lerp(r[0], r[dc], lx1[i]);
  };
  // the OC runs keep no argmax (a select a logit): the prediction needs the OC one only where
  // the two maxima tie, found below
  Run<acc_t, false> oc[PPT];
  Run<acc_t, true> ic[PPT];
  acc_t poison = (acc_t)0;
  const int* ocl = T.cls + T.nic;
#pragma unroll 1
  for (int j = 0; j < T.noc; ++j) {
    const int k = ocl[j];
    const acc_t* r = resize_row(R0, row_bytes, k);
    const acc_t r0 = r[0], d = r[dc] - r0;
    poison += d * (acc_t)0;
#pragma unroll
    for (int i = 0; i < PPT; ++i) oc[i].add(r0 + lx1[i] * d, k);
  }
#pragma unroll 1
  for (int j = 0; j < T.nic; ++j) {
    const int k = T.cls[j];
    const acc_t* r = resize_row(R0, row_bytes, k);
    const acc_t r0 = r[0], d = r[dc] - r0;
    poison += d * (acc_t)0;
#pragma unroll
    for (int i = 0; i < PPT; ++i) ic[i].add(r0 + lx1[i] * d, k);
  }
  // merge_runs breaks a tie between the IC and OC maxima by the lower class: the first OC class
  // holding the maximum (the run's argmax), recomputed bitwise as the loop above did
  bool tie = false;
#pragma unroll
  for (int i = 0; i < PPT; ++i) tie |= oc[i].m == ic[i].m;
  if (tie) resize_oc_tie_args<acc_t, PPT>(z, T, oc, ic);
  acc_t poisons[PPT];  // one term for the slot's pixels
#pragma unroll
  for (int i = 0; i < PPT; ++i) poisons[i] = poison;
  Merged<acc_t> g[PPT];
  Run<acc_t, false> grp[PPT];
  forward_maps<acc_t, GROUP, CE, PPT>(z, T, oc, ic, poisons, target, ignore_index, loss, ce, g,
                                      grp);
}

// One thread's pixels in an output row: slot s's segment of cell column c.
template <typename acc_t>
struct SlotPixels {
  int c, c1;  // source columns: the left tap of every pixel, and its right tap
  int x;      // first output column
  int n;      // valid pixels (0 for a slot past the last)
  acc_t lx0[kThreadPixels], lx1[kThreadPixels];  // 0 for a pixel that is not valid
};

template <typename acc_t>
OCR_HD SlotPixels<acc_t> resize_slot(const ResizeAxis<acc_t>& ax, const ResizePlan& P,
                                     const int* table, int s) {
  SlotPixels<acc_t> q;
  const int* e = table + 2 * (s < P.slots ? s : 0);
  q.c = e[0] >> 1;
  q.c1 = q.c + (e[0] & 1);
  q.x = e[1] >> 3;
  q.n = s < P.slots ? e[1] & 7 : 0;
#pragma unroll
  for (int i = 0; i < kThreadPixels; ++i) {
    const Tap<acc_t> t = resize_tap(ax, (int64_t)q.x + (i < q.n ? i : 0));
    q.lx0[i] = i < q.n ? t.l0 : acc_t(0);
    q.lx1[i] = i < q.n ? t.l1 : acc_t(0);
  }
  return q;
}

// list[0] = nic, list[1 ..] = image b's classes, IC first then OC, each ascending (one thread
// writes it; the callers' barriers publish it).
template <typename Block>
OCR_HD void resize_class_list(const Block& blk, const uint8_t* icb, int C1, int* list) {
  if (blk.tid != 0) return;
  int n = 0;
  for (int k = 0; k < C1; ++k)
    if (icb[k]) list[1 + n++] = k;
  list[0] = n;
  for (int k = 0; k < C1; ++k)
    if (!icb[k]) list[1 + n++] = k;
}

// At an item of image b: the block's class list for b (rebuilt only when b changes), after a
// barrier that ends the previous item's use of shared memory.
template <typename scalar_t, typename acc_t, typename Block>
OCR_HD void resize_enter_item(const Block& blk, const ResizeView<scalar_t, acc_t>& V, int64_t b,
                              int64_t* listed, int* list) {
  blk.sync();
  if (b != *listed) resize_class_list<Block>(blk, V.ic + b * V.C1, (int)V.C1, list);
  *listed = b;
}

// R[k][j] = l0·z[b, k, i0, j] + l1·z[b, k, i1, j]: output row y's logits interpolated along y.
// A thread keeps one column j and walks the classes (no division in the loop), two a step: one
// class a step cost 17 SASS an element (64-bit pointer steps and copies around two loads), two
// ~11, and four loads in flight.
template <typename scalar_t, typename acc_t, typename Block, typename Load>
OCR_HD void resize_stage_row(const Block& blk, const ResizeView<scalar_t, acc_t>& V, int64_t b,
                             const Tap<acc_t>& ty, acc_t* R, const Load& load) {
  const int w = (int)V.ax.in, classes = (int)V.C1;
  const int per = w <= blk.n ? blk.n / w : 1;  // classes staged at once
  const int j0 = w <= blk.n ? blk.tid % w : blk.tid, k0 = w <= blk.n ? blk.tid / w : 0;
  const int staged_cols = k0 < per ? w : 0;  // the threads past per·w stage nothing
  const scalar_t* r0 = V.z + b * V.sB + ty.i0 * V.sH;
  const scalar_t* r1 = V.z + b * V.sB + ty.i1 * V.sH;
  const int mine = k0 < classes ? (classes - k0 + per - 1) / per : 0;  // this thread's classes
  const int pairs = mine / 2;
  for (int j = j0; j < staged_cols; j += blk.n) {
    const scalar_t* p0 = r0 + k0 * V.sC + j * V.sW;
    const scalar_t* p1 = r1 + k0 * V.sC + j * V.sW;
    acc_t* o = R + k0 * w + j;
    const int64_t dz = per * V.sC, dr = (int64_t)per * w;
#pragma unroll 1
    for (int u = 0; u < pairs; ++u, p0 += 2 * dz, p1 += 2 * dz, o += 2 * dr) {
      const acc_t a0 = load(p0[0]);
      const acc_t a1 = load(p1[0]);
      const acc_t b0 = load(p0[dz]);
      const acc_t b1 = load(p1[dz]);
      o[0] = ty.l0 * a0 + ty.l1 * a1;
      o[dr] = ty.l0 * b0 + ty.l1 * b1;
    }
    if (mine & 1) *o = ty.l0 * load(*p0) + ty.l1 * load(*p1);
  }
}

// Forward of the output rows [first, last) (row = b·H + y) by one block.
template <typename scalar_t, typename acc_t, int GROUP, bool CE, typename Block, typename Load>
OCR_HD void resized_forward_block(const Block& blk, const ResizeView<scalar_t, acc_t>& V,
                                  const ResizePlan& P, int64_t first, int64_t last, void* smem,
                                  const Load& load) {
  constexpr int PPT = kThreadPixels;
  const int C1 = (int)V.C1, w = (int)V.ax.in;
  const int64_t H = V.ay.out, W = V.ax.out;
  const ResizeSmem<acc_t> S = resize_smem_parts<acc_t>(smem, C1, w, P, false);
  resize_tables(blk, V.ax, S);
  int64_t listed = -1;
  SlotPixels<acc_t> q = resize_slot(V.ax, P, S.slot, blk.tid);
  for (int64_t item = first; item < last; ++item) {
    const int64_t b = item / H, y = item - b * H;
    resize_enter_item(blk, V, b, &listed, S.list);
    resize_stage_row(blk, V, b, resize_tap(V.ay, y), S.R, load);
    blk.sync();
    const ThreadArgs<acc_t> T{S.list + 1, S.list[0], C1 - S.list[0], C1, V.prior, V.margin,
                              V.threshold, V.pixels};
    for (int g = 0; g < P.groups; ++g) {
      // (template arguments spelled out: bench/static.py weighs this call by groups > 1)
      if (P.groups > 1) q = resize_slot<acc_t>(V.ax, P, S.slot, g * P.threads + blk.tid);
      const unsigned row_bytes = (unsigned)w * sizeof(acc_t);
      const int64_t p = y * W + q.x;
      int64_t t[PPT];
#pragma unroll
      for (int i = 0; i < PPT; ++i)
        t[i] = CE && i < q.n ? V.target[b * V.tl.sB + (p + i) * V.tl.sN] : 0;
      acc_t loss[PPT], ce[PPT];
      // (the right tap 0 or 1 past the left)
      resize_thread_forward<acc_t, GROUP, CE, PPT>(S.R + q.c, row_bytes, q.c1 - q.c, q.lx1, T, t,
                                                   V.ignore_index, loss, ce);
      const int64_t o = b * H * W + p;
#pragma unroll
      for (int i = 0; i < PPT; ++i) {
        if (i >= q.n) continue;
        V.ocr_out[o + i] = loss[i];
        if (CE) V.ce_out[o + i] = ce[i];
      }
    }
  }
}

// The thread's share of the combine's (source column, chunk class) items, once a block: as
// resize_stage_row lays out (column, class), per = n / w classes at once when a row fits the
// block. One thread a column walking the chunk's classes left a block of 96 threads with 41
// columns two busy warps of four class steps each; (column, class) items are three warps of two.
template <typename acc_t, typename Block>
OCR_HD void resize_combine_lane(const Block& blk, int w, ResizeSmem<acc_t>* S) {
  S->comb_per = w <= blk.n ? blk.n / w : 1;
  S->comb_j0 = w <= blk.n ? blk.tid % w : blk.tid;
  S->comb_m0 = w <= blk.n ? blk.tid / w : 0;
}

// Column j's chunk columns for this row: [a0, b0) whose lx0 sums reach j (the slots of cell j)
// and [a1, b1) whose lx1 sums do (cell j − 1's, its upper tap being j, and at an edge cell j's
// own: b1 is a0 or b0), as chunk columns: on the slots' path the slots of group g (s − g·threads,
// clamped to the group), on a compacted row the ranks of the active slots among them (the
// exclusive prefix count of resize_slot_scan: a slot range's active ones are a contiguous run of
// ranks). Set once a row, not per class, and packed in one int a column, rk[j] = a1 | a0 << 9 |
// b0 << 18 | (b1 == b0) << 27 (chunk columns <= kResizeMaxThreads < 512): four ints a column
// pushed the 81-class backward's block past the fifth a multiprocessor holds. The first flush's
// barrier publishes it.
static_assert(kResizeMaxThreads < 512, "resize_column_ranges packs chunk columns in 9 bits");

template <typename acc_t, typename Block>
OCR_HD void resize_column_ranges(const Block& blk, const ResizePlan& P, const ResizeSmem<acc_t>& S,
                                 const ResizeAxis<acc_t>& ax, int g, int K, bool ranked) {
  const int w = (int)ax.in, base = g * P.threads;
  for (int j = blk.tid; j < w; j += blk.n) {
    const bool prev = j > 0 && resize_upper(ax, j - 1) == j, own = resize_upper(ax, j) == j;
    const int s[3] = {prev ? S.first[j - 1] : S.first[j], S.first[j], S.first[j + 1]};
    int e = own ? 1 << 27 : 0;
#pragma unroll
    for (int u = 0; u < 3; ++u) {
      const int d = s[u] - base;
      e |= (ranked ? (s[u] < P.slots ? S.slot[2 * s[u]] : K)
                   : (d < 0 ? 0 : (d > P.threads ? P.threads : d))) << (9 * u);
    }
    S.rk[j] = e;
  }
}

// The chunk's x-combine, one (source column j, chunk class m) item at a time: the lx0 sums of the
// chunk columns reaching j, then their lx1 sums, in chunk-column order (rk: slot or rank order),
// times ly0 into top and ly1 into bottom. Each item has one writer: bitwise reproducible.
// Column j's setup (its ranges, unpacked once for the thread's classes of the chunk):
template <typename acc_t>
struct CombineColumn {
  static constexpr int U = kResizeUnrolledSlots;
  int n0, n1;
  bool on0[U], on1[U], more;
  const acc_t *c0, *c1;  // class m0's lx0 / lx1 sums of the chunk columns reaching j
};

template <typename acc_t>
OCR_HD CombineColumn<acc_t> resize_combine_column(const ResizePlan& P, const ResizeSmem<acc_t>& S,
                                                  int j, int m0) {
  constexpr int U = kResizeUnrolledSlots;
  CombineColumn<acc_t> q;
  const int e = S.rk[j];
  const int a1 = e & 511, a0 = (e >> 9) & 511, b0 = (e >> 18) & 511, b1 = e >> 27 ? b0 : a0;
  q.n0 = b0 - a0;
  q.n1 = b1 - a1;
  // a column holds up to U chunk columns but at an edge: those unrolled (predicated), then any
  // further ones. The taps are the column's, the same for every class: set once here
#pragma unroll
  for (int u = 0; u < U; ++u) {
    q.on0[u] = u < q.n0;
    q.on1[u] = u < q.n1;
  }
  q.more = q.n0 > U || q.n1 > U;
  q.c0 = S.chunk + m0 * 2 * P.threads + a0;
  q.c1 = q.c0 + P.threads + (a1 - a0);
  return q;
}

// Item (j, class m of the chunk): c0, c1 the column's sums of class m.
template <typename acc_t>
OCR_HD void resize_combine_item(const ResizeSmem<acc_t>& S, const CombineColumn<acc_t>& q,
                                const acc_t* c0, const acc_t* c1, int o, const Tap<acc_t>& ty) {
  constexpr int U = kResizeUnrolledSlots;
  const int n0 = q.n0, n1 = q.n1;
  acc_t gx = acc_t(0);
#pragma unroll
  for (int u = 0; u < U; ++u) gx += q.on0[u] ? c0[u] : acc_t(0);
  if (q.more) {
#pragma unroll 1
    for (int s = U; s < n0; ++s) gx += c0[s];
  }
#pragma unroll
  for (int u = 0; u < U; ++u) gx += q.on1[u] ? c1[u] : acc_t(0);
  if (q.more) {
#pragma unroll 1
    for (int s = U; s < n1; ++s) gx += c1[s];
  }
  S.top[o] += ty.l0 * gx;
  S.bot[o] += ty.l1 * gx;
}

// The class thread_backward stored p-th in a row: its OC classes, then its IC ones, each in
// list order (list: nic, then the IC classes, then the OC ones). Worked out by the combine's
// items, not published by a thread a class (an address and a store in every class step).
OCR_HD int resize_stored_class(const int* list, int noc, int p) {
  return list[1 + (p < noc ? list[0] + p : p - noc)];
}

// A slots'-path row: every column, the thread's items as resize_combine_lane laid them out.
template <typename scalar_t, typename acc_t, typename Block>
OCR_HD void resize_combine(const Block& blk, const ResizeView<scalar_t, acc_t>& V,
                           const ResizePlan& P, const ResizeSmem<acc_t>& S, int p0, int count,
                           const Tap<acc_t>& ty) {
  const int columns = (int)V.ax.in, per = S.comb_per, m0 = S.comb_m0;
  const int noc = (int)V.C1 - S.list[0];
  const int mine_cols = m0 < per ? columns : 0;  // the threads past per·w combine nothing
  const int step = 2 * P.threads * per;          // one class of this thread's to its next
  for (int j = S.comb_j0; j < mine_cols; j += blk.n) {
    const CombineColumn<acc_t> q = resize_combine_column(P, S, j, m0);
    const acc_t *c0 = q.c0, *c1 = q.c1;
#pragma unroll 1
    for (int m = m0; m < count; m += per, c0 += step, c1 += step)
      resize_combine_item(S, q, c0, c1, resize_stored_class(S.list, noc, p0 + m) * columns + j, ty);
  }
}

// A compacted row: only the columns its active slots reach, [S.span[0], S.span[1])
// (resize_slot_scan), laid out over the block as resize_span_lane set (a row of ~10 active
// slots reaches ~8 of 41 columns: one warp's items instead of three warps').
template <typename scalar_t, typename acc_t, typename Block>
OCR_HD void resize_combine_span(const Block& blk, const ResizeView<scalar_t, acc_t>& V,
                                const ResizePlan& P, const ResizeSmem<acc_t>& S, int p0,
                                int count, const Tap<acc_t>& ty) {
  const int columns = (int)V.ax.in, per = S.comb_per, m0 = S.comb_m0;
  const int noc = (int)V.C1 - S.list[0];
  // (own names for the loops' bounds: bench/static.py gives them the compacted rows' trips; a
  // thread past per·cols has m0 = kResizeClassChunk >= count: resize_span_lane)
  const int span_classes = count, span_end = m0 < count ? S.span[1] : 0;
  const int step = 2 * P.threads * per;
  for (int j = S.span[0] + S.comb_j0; j < span_end; j += blk.n) {
    const CombineColumn<acc_t> q = resize_combine_column(P, S, j, m0);
    const acc_t *c0 = q.c0, *c1 = q.c1;
#pragma unroll 1
    for (int m = m0; m < span_classes; m += per, c0 += step, c1 += step)
      resize_combine_item(S, q, c0, c1, resize_stored_class(S.list, noc, p0 + m) * columns + j, ty);
  }
}

// A chunk of classes complete in every thread: combine it (between barriers, so that the chunk
// can be refilled). Every thread of the block takes its items, a compacted row's idle warps too
// (resize_idle_flushes). RANKED: a compacted row's (resize_combine_span).
template <typename scalar_t, typename acc_t, bool RANKED, typename Block>
OCR_HD void resize_flush_body(const Block& blk, const ResizeView<scalar_t, acc_t>& V,
                              const ResizePlan& P, const ResizeSmem<acc_t>& S, int p0,
                              int count, const Tap<acc_t>& ty) {
  blk.sync();
  if (RANKED)
    resize_combine_span(blk, V, P, S, p0, count, ty);
  else
    resize_combine(blk, V, P, S, p0, count, ty);
  blk.sync();
}

// The flush inside the class loops (bench/static.py weighs calls of this name 1/chunk: one class
// step in kResizeClassChunk flushes), then the chunk's refill from its start: *done classes
// stored before it, the thread's entries put0 (lx0 sums) and put1 (lx1); the others call
// resize_flush_body.
template <typename scalar_t, typename acc_t, bool RANKED, typename Block>
OCR_HD void resize_chunk_flush(const Block& blk, const ResizeView<scalar_t, acc_t>& V,
                               const ResizePlan& P, const ResizeSmem<acc_t>& S,
                               const Tap<acc_t>& ty, int* done, int* filled, acc_t** put0,
                               acc_t** put1) {
  resize_flush_body<scalar_t, acc_t, RANKED, Block>(blk, V, P, S, *done, *filled, ty);
  *done += *filled;
  *filled = 0;
  *put0 = S.chunk + blk.tid;
  *put1 = *put0 + P.threads;
}

// Output row y's slots in the slot layout (every thread its PPT pixels, all of them read: see
// zf; `read` is unused), the x sums in registers, combined every kResizeClassChunk classes.
template <typename scalar_t, typename acc_t, int GROUP, bool CE, bool RANKED, typename Block>
OCR_HD void resize_backward_slots(const Block& blk, const ResizeView<scalar_t, acc_t>& V,
                                  const ResizePlan& P, const ResizeSmem<acc_t>& S,
                                  const ThreadArgs<acc_t>& T, const SlotPixels<acc_t>& q,
                                  const Tap<acc_t>& ty, const acc_t* l, const acc_t* a,
                                  const acc_t* gce, const int64_t* t,
                                  bool oc_targets) {
  constexpr int PPT = kThreadPixels;
  const int w = (int)V.ax.in;
  const acc_t* R0 = S.R + q.c;
  const int dc = q.c1 - q.c;
  // both loads unconditional (shared memory, always in range): one pair a class for the
  // thread's pixels. Every pixel reads its logits, those without a gradient too (no select a
  // logit): thread_backward needs them finite, and they are, as the forward computed them
  // bitwise alike (resize_lerp) and found them finite (else the loss is NaN and so is the
  // gradient of the columns c, c1 the pixel reaches, through every pixel of the slot, all of
  // which read them); a padding pixel (i >= n) reads column c's and stores with weights 0.
  const unsigned row_bytes = (unsigned)w * sizeof(acc_t);
  auto zf = [&](int k, int i) -> acc_t {
    const acc_t* r = resize_row(R0, row_bytes, k);
    return resize_lerp(r[0], r[dc], q.lx1[i]);
  };
  // the chunk entries of this thread's sums: put0 (lx0) and put1 (lx1) walk the chunk's classes
  // (kept as two pointers: from `filled`, each store was three multiply-adds and two shifts)
  const int step = 2 * P.threads;
  acc_t *put0 = S.chunk + blk.tid, *put1 = put0 + P.threads;
  int filled = 0, done = 0;  // classes in the chunk, and stored before it
  acc_t t0 = 0, t1 = 0;
  auto store = [&](int, int i, acc_t d) {
    t0 = i == 0 ? q.lx0[0] * d : t0 + q.lx0[i] * d;
    t1 = i == 0 ? q.lx1[0] * d : t1 + q.lx1[i] * d;
    if (i == PPT - 1) {
      *put0 = t0;
      *put1 = t1;
      put0 += step;
      put1 += step;
      // (template arguments spelled out: bench/static.py weighs this call site 1/chunk)
      if (++filled == kResizeClassChunk)
        resize_chunk_flush<scalar_t, acc_t, RANKED>(blk, V, P, S, ty, &done, &filled, &put0, &put1);
    }
  };
  thread_backward<acc_t, GROUP, CE, PPT, decltype(zf), decltype(store), true>(zf, store, T, l, a,
                                                                             gce, t, oc_targets);
  if (filled > 0) resize_flush_body<scalar_t, acc_t, RANKED, Block>(blk, V, P, S, done, filled, ty);
}

// The slots' path of a row that does not compact: the chunk columns are group g's slots.
template <typename scalar_t, typename acc_t, int GROUP, bool CE, typename Block>
OCR_HD void resize_slot_row(const Block& blk, const ResizeView<scalar_t, acc_t>& V,
                            const ResizePlan& P, const ResizeSmem<acc_t>& S,
                            const ThreadArgs<acc_t>& T, const SlotPixels<acc_t>& q,
                            const Tap<acc_t>& ty, int g, const acc_t* l, const acc_t* a,
                            const acc_t* gce, const int64_t* t,
                            bool oc_targets) {
  resize_column_ranges(blk, P, S, V.ax, g, 0, false);
  resize_backward_slots<scalar_t, acc_t, GROUP, CE, false>(blk, V, P, S, T, q, ty, l, a, gce, t,
                                                          oc_targets);
}

// ---- the backward's compacted rows -------------------------------------------------------------
// A row whose slots with a gradient pixel ("active") fill fewer warps than the block has runs
// only those: with one slot group, S.slot is free once every thread holds its slot, and each row
// reuses it as [2·s] whether slot s is active (then, after resize_slot_scan, its rank among the
// active slots), [2·s + 1] 16·(its first output column) + the mask of its pixels with a gradient.
// Thread r takes the active slot of rank r; the ranks follow the slots, so the active slots of a
// column's ranges are a contiguous range of ranks (resize_column_ranges), which resize_combine
// sums in rank order as it does slots (bitwise reproducible, no atomics). The warps past the last
// rank skip thread_backward and only take their items of the flushes' combines.

// The last slot whose rank is <= r (after resize_slot_scan): the active one of rank r < K (ranks
// are non-decreasing), by binary search.
OCR_HD int resize_rank_slot(const ResizePlan& P, const int* sl, int r) {
  const int probes = resize_search_steps(P.slots), top = 1 << (probes - 1);
  int lo = 0;
#pragma unroll 1
  for (int step = 0; step < probes; ++step) {
    const int s = lo + (top >> step);
    if (s < P.slots && sl[2 * s] <= r) lo = s;
  }
  return lo;
}

// One thread: the slots' exclusive prefix sum in place (a few instructions a slot, per row), and
// span = the source columns the active slots reach, [left tap of rank 0's, right tap of rank
// K − 1's + 1) (the row has K > 0; two searches, not a test a slot in the scan).
template <typename acc_t, typename Block>
OCR_HD void resize_slot_scan(const Block& blk, const ResizePlan& P, const ResizeAxis<acc_t>& ax,
                             int* sl, int* span) {
  if (blk.tid != 0) return;
  int run = 0;
#pragma unroll 1
  for (int s = 0; s < P.slots; ++s) {
    const int n = sl[2 * s];
    sl[2 * s] = run;
    run += n;
  }
  const int first = resize_rank_slot(P, sl, 0), last = resize_rank_slot(P, sl, run - 1);
  span[0] = (int)resize_tap(ax, (int64_t)(sl[2 * first + 1] >> 4)).i0;
  span[1] = (int)resize_tap(ax, (int64_t)(sl[2 * last + 1] >> 4)).i1 + 1;
}

// A compacted row's layout of the combine's items over its span (resize_combine_span): as
// resize_combine_lane's over the row, once a row. The threads past per·cols hold no item: their
// m0 is set past any chunk's classes, so that resize_combine_span's `m0 < count` skips them
// (with m0 = tid / cols >= per, a thread would take class m0 of its column, which the thread
// with m0 mod per also takes: a second += of the same item, a gradient counted twice; e.g. 96
// threads over a span of 41 columns: per 2, and threads 82 .. 95 had m0 = 2).
template <typename acc_t, typename Block>
OCR_HD void resize_span_lane(const Block& blk, ResizeSmem<acc_t>* S) {
  const int cols = S->span[1] - S->span[0];
  const int per = cols <= blk.n ? blk.n / cols : 1, m0 = cols <= blk.n ? blk.tid / cols : 0;
  S->comb_per = per;
  S->comb_m0 = m0 < per ? m0 : kResizeClassChunk;
  S->comb_j0 = cols <= blk.n ? blk.tid - m0 * cols : blk.tid;
}

// Publishes this thread's slot (first output column x, mask of its pixels with a gradient) and
// ranks the active slots.
template <typename acc_t, typename Block>
OCR_HD void resize_row_ranks(const Block& blk, const ResizePlan& P, const ResizeSmem<acc_t>& S,
                             const ResizeAxis<acc_t>& ax, int x, int mask, int K) {
  if (blk.tid < P.slots) {
    S.slot[2 * blk.tid] = mask != 0 ? 1 : 0;
    S.slot[2 * blk.tid + 1] = 16 * x + mask;
  }
  blk.sync();
  // (template arguments spelled out: bench/static.py weighs this call by the share of warp 0)
  resize_slot_scan<acc_t, Block>(blk, P, ax, S.slot, S.span);
  blk.sync();
  resize_column_ranges(blk, P, S, ax, 0, K, true);
}

// The slot-path row (resize_backward_slots) for a thread whose warp holds a rank below K: the
// active slot of rank tid (none past K: zeros), its pixels' factors re-read from the maps.
template <typename scalar_t, typename acc_t, int GROUP, bool CE, typename Block>
OCR_HD void resize_compact_slot(const Block& blk, const ResizeView<scalar_t, acc_t>& V,
                                const ResizePlan& P, const ResizeSmem<acc_t>& S,
                                const ThreadArgs<acc_t>& T, const Tap<acc_t>& ty, int64_t b,
                                int64_t y, int K) {
  constexpr int PPT = kThreadPixels;
  const int r = blk.tid;
  int x = 0, mask = 0;
  if (r < K) {
    const int e = S.slot[2 * resize_rank_slot(P, S.slot, r) + 1];
    x = e / 16;
    mask = e % 16;
  }
  SlotPixels<acc_t> q;
  const Tap<acc_t> t0 = resize_tap(V.ax, (int64_t)x);
  q.c = (int)t0.i0;  // every pixel of a slot has the same taps
  q.c1 = (int)t0.i1;
  q.x = x;
  q.n = 0;
  int64_t t[PPT];
  acc_t l[PPT], a[PPT], gce[PPT];
#pragma unroll
  for (int i = 0; i < PPT; ++i) {
    const bool on = (mask >> i & 1) != 0;
    const Tap<acc_t> tx = resize_tap(V.ax, (int64_t)x + (on ? i : 0));
    q.lx0[i] = on ? tx.l0 : acc_t(0);
    q.lx1[i] = on ? tx.l1 : acc_t(0);
    const int64_t pi = y * V.ax.out + x + i;
    acc_t go = 0, gc = 0;
    bool ignored = true;
    l[i] = 0;
    t[i] = 0;
    if (on) {
      l[i] = V.loss[b * V.ll.sB + pi * V.ll.sN];
      go = V.g_ocr[b * V.gol.sB + pi * V.gol.sN];
      if (CE) {
        t[i] = V.target[b * V.tl.sB + pi * V.tl.sN];
        ignored = t[i] == V.ignore_index;
        gc = ignored ? acc_t(0) : V.g_ce[b * V.gcl.sB + pi * V.gcl.sN];
      }
    }
    backward_factors(l[i], go, gc, ignored, &a[i], &gce[i]);
  }
  resize_backward_slots<scalar_t, acc_t, GROUP, CE, true>(blk, V, P, S, T, q, ty, l, a, gce, t,
                                                         true);
}

// A warp without a rank in a compacted row: the C1 classes' flushes as a busy warp meets them
// (the same barriers, chunks of kResizeClassChunk classes, the last one the rest), taking its
// items of their combines.
template <typename scalar_t, typename acc_t, typename Block>
OCR_HD void resize_idle_flushes(const Block& blk, const ResizeView<scalar_t, acc_t>& V,
                                const ResizePlan& P, const ResizeSmem<acc_t>& S,
                                const Tap<acc_t>& ty, int C1) {
  const int flushes = (C1 + kResizeClassChunk - 1) / kResizeClassChunk;
#pragma unroll 1
  for (int m = 0; m < flushes; ++m) {
    const int count = m + 1 < flushes ? kResizeClassChunk : C1 - m * kResizeClassChunk;
    resize_flush_body<scalar_t, acc_t, true, Block>(blk, V, P, S, m * kResizeClassChunk, count, ty);
  }
}

// Output row y of image b with K active slots in fewer warps than the block's.
template <typename scalar_t, typename acc_t, int GROUP, bool CE, typename Block>
OCR_HD void resize_backward_compact(const Block& blk, const ResizeView<scalar_t, acc_t>& V,
                                    const ResizePlan& P, const ResizeSmem<acc_t>& S,
                                    const ThreadArgs<acc_t>& T, const Tap<acc_t>& ty, int64_t b,
                                    int64_t y, int K) {
  if (blk.tid - blk.tid % kResizeLanes < K) {
    // (template arguments spelled out: bench/static.py weighs this call by the share of the
    // warps that hold a rank)
    resize_compact_slot<scalar_t, acc_t, GROUP, CE, Block>(blk, V, P, S, T, ty, b, y, K);
  } else {
    // (template arguments spelled out: bench/static.py weighs this call by the share of the
    // warps that hold none)
    resize_idle_flushes<scalar_t, acc_t, Block>(blk, V, P, S, ty, T.C1);
  }
}

// Backward of the cell rows [first, last) (item = b·h + c) by one block: each writes
// the cell's top and bottom rows into V.corners ([2, B, C1, h, w]: plane 0 top, plane 1 bottom).
template <typename scalar_t, typename acc_t, int GROUP, bool CE, typename Block, typename Load>
OCR_HD void resized_backward_block(const Block& blk, const ResizeView<scalar_t, acc_t>& V,
                                   const ResizePlan& P, int64_t first, int64_t last, void* smem,
                                   const Load& load) {
  constexpr int PPT = kThreadPixels;
  const int C1 = (int)V.C1, w = (int)V.ax.in, zeros = 2 * C1 * w, out_classes = C1;
  const int64_t h = V.ay.in, W = V.ax.out;
  const int64_t plane = V.B * V.C1 * h * w;
  ResizeSmem<acc_t> S = resize_smem_parts<acc_t>(smem, C1, w, P, true);
  resize_combine_lane(blk, w, &S);
  resize_tables(blk, V.ax, S);
  SlotPixels<acc_t> q = resize_slot(V.ax, P, S.slot, blk.tid);
  // one slot group: S.slot is not read again, and the rows may compact (resize_row_ranks); the
  // first column is packed in 28 bits there. Not with the cross-entropy: its gradient reaches
  // every pixel that is not ignored, so its rows compact only where most pixels are ignored, and
  // the compacted path's code costs the seg kernel registers and instructions on every row
  // (bench --static: 58 -> 62 SASS per logit at C+1 = 81)
  const bool compactable = !CE && P.groups == 1 && W < (int64_t(1) << 27);
  int64_t listed = -1;
  for (int64_t item = first; item < last; ++item) {
    const int64_t b = item / h, c = item - b * h;
    resize_enter_item(blk, V, b, &listed, S.list);
#pragma unroll 1
    for (int e = blk.tid; e < zeros; e += blk.n) S.top[e] = acc_t(0);  // top, then bot
    int64_t y0, ny;
    resize_cell_range(V.ay, c, &y0, &ny);
    for (int64_t r = 0; r < ny; ++r) {
      const Tap<acc_t> ty = resize_tap(V.ay, y0 + r);
      blk.sync();
      resize_stage_row(blk, V, b, ty, S.R, load);
      blk.sync();
      const ThreadArgs<acc_t> T{S.list + 1, S.list[0], C1 - S.list[0], C1, V.prior, V.margin,
                                V.threshold, V.pixels};
      for (int g = 0; g < P.groups; ++g) {
        if (P.groups > 1) q = resize_slot<acc_t>(V.ax, P, S.slot, g * P.threads + blk.tid);
        const int64_t p = (y0 + r) * W + q.x;
        bool read[PPT];
        int64_t t[PPT];
        acc_t l[PPT], a[PPT], gce[PPT];
        int mask = 0;  // the pixels with a gradient (NaN ones included: NaN everywhere)
        bool oc_target = false;  // a pixel's CE gradient has its −gce at an OC class
#pragma unroll
        for (int i = 0; i < PPT; ++i) {
          const int64_t pi = p + i;
          const bool valid = i < q.n;
          acc_t go = 0, gc = 0;
          bool ignored = true;
          l[i] = 0;
          t[i] = 0;
          if (valid) {
            l[i] = V.loss[b * V.ll.sB + pi * V.ll.sN];
            go = V.g_ocr[b * V.gol.sB + pi * V.gol.sN];
            if (CE) {
              t[i] = V.target[b * V.tl.sB + pi * V.tl.sN];
              ignored = t[i] == V.ignore_index;
              gc = ignored ? acc_t(0) : V.g_ce[b * V.gcl.sB + pi * V.gcl.sN];
              oc_target |= !ignored && V.ic[b * V.C1 + clamp_class(t[i], V.C1)] == 0;
            }
          }
          // called for every pixel: an invalid one gets a = gce = 0
          const bool r = backward_factors(l[i], go, gc, ignored, &a[i], &gce[i]);
          read[i] = valid && r;
          mask |= read[i] || (valid && l[i] != l[i]) ? 1 << i : 0;
        }
        if (compactable) {
          const int K = blk.count(mask != 0);  // the active slots
          // a row with no gradient adds nothing (the cross-entropy's reaches every pixel that
          // is not ignored)
          if (K == 0) continue;
          if ((K + kResizeLanes - 1) / kResizeLanes < blk.n / kResizeLanes) {
            // (template arguments spelled out: bench/static.py weighs these calls by the share
            // of the rows that compact; Sr: the combine's layout over the row's span)
            resize_row_ranks<acc_t, Block>(blk, P, S, V.ax, (int)q.x, mask, K);
            ResizeSmem<acc_t> Sr = S;
            resize_span_lane<acc_t, Block>(blk, &Sr);
            resize_backward_compact<scalar_t, acc_t, GROUP, CE, Block>(blk, V, P, Sr, T, ty, b,
                                                                       y0 + r, K);
            continue;
          }
        } else if (!blk.any(mask != 0)) {
          continue;
        }
        // whether the row's OC class loop compares each class with the targets (a second
        // barrier a row: pseudo-labels usually keep to the tags, so usually not)
        const bool oc_targets = CE && blk.any(oc_target);
        // (template arguments spelled out: bench/static.py weighs this call by the share of the
        // rows that take it)
        resize_slot_row<scalar_t, acc_t, GROUP, CE, Block>(blk, V, P, S, T, q, ty, g, l, a, gce, t,
                                                           oc_targets);
      }
    }
    blk.sync();
    // the two rows out, a thread a column (as resize_stage_row and the combine)
    const int per = S.comb_per, j0 = S.comb_j0, k0 = S.comb_m0;
    acc_t* out = V.corners + ((b * V.C1) * h + c) * w;
    const int out_cols = k0 < per ? w : 0;
    for (int j = j0; j < out_cols; j += blk.n) {
      acc_t* o = out + (int64_t)k0 * h * w + j;
      const int64_t step = (int64_t)per * h * w;
#pragma unroll 1
      for (int k = k0; k < out_classes; k += per, o += step) {
        o[0] = S.top[k * w + j];
        o[plane] = S.bot[k * w + j];
      }
    }
  }
}

// Which bottom entries reach source row i: cell row i − 1's (its lower tap is i) and, at an
// edge, cell row i's own.
template <typename acc_t>
OCR_HD void resize_gather_rows(const ResizeAxis<acc_t>& ay, int64_t i, bool* from_prev, bool* own) {
  *from_prev = i > 0 && resize_upper(ay, i - 1) == i;
  *own = resize_upper(ay, i) == i;
}

// The gradient of a low-resolution logit from the [2, B, C1, h, w] buffer: e = its top entry,
// then the bottom entries that reach it (plane apart; one row of w up for cell row i − 1).
template <typename acc_t>
OCR_HD acc_t resized_fast_gather(const acc_t* e, int64_t plane, int64_t w, bool from_prev,
                                 bool own) {
  acc_t s = e[0];
  if (from_prev) s += e[plane - w];
  if (own) s += e[plane];
  return s;
}

}  // namespace ocr
