// CPU kernels of the OCR ops with the bilinear upsampling fused in (ocr_loss(size=...),
// seg_ocr_loss(upsample=True)): the [B, C+1, H, W] logits and their gradient are never
// materialised.
//
// Work unit: a segment of up to P output pixels of one output row. Its C+1 logits are
// interpolated from the segment's two source rows into a small tile (fp32; fp64 for fp64 logits),
// the tile kernels of ocr_tiles.h run on it unchanged (forward_tiles / backward_tiles on a
// one-tile view of it), and the backward pushes the tile's gradient back through the same
// bilinear weights: first along x into one source-row buffer, then into the two source rows.
//
// Determinism without float atomics and without per-chunk buffers: the output rows of each image
// are cut into chunks of a fixed number of rows (set by the shape, never by the thread count),
// long enough that chunks j and j + 2 never read a common source row. The even chunks run first
// (in parallel: no two of them touch a common row), then the odd ones, each accumulating in a
// fixed order straight into the low-resolution gradient (fp32; fp64 for fp64 -- the gradient
// itself when it has that dtype and contiguous rows, else one low-resolution buffer copied into
// it). Every source row therefore receives its terms in one fixed order: the gradient is bitwise
// the same for any number of threads and any scheduling, and the only extra memory is that of
// the [B, H, W] maps.
//
// Sampling grid: ocr_resize_pixel.h's resize_tap (torch's upsample_bilinear2d given an output
// size), the same function the CUDA kernels run.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "../ocr_resize_host.h"
#include "../ocr_resize_thread.h"

#include "isa.h"
#include "ocr_tiles.h"

namespace ocr {
namespace {

using namespace ocr::cpu;
namespace cpu_isa = ocr_kernels::cpu_isa;

// Source indices and weights of one output axis: out[d] = l0[d]·in[i0[d]] + l1[d]·in[i1[d]].
template <typename acc_t>
struct Axis {
  std::vector<int64_t> i0, i1;
  std::vector<acc_t> l0, l1;
};

template <typename acc_t>
Axis<acc_t> sampling_axis(int64_t in, int64_t out, bool align_corners) {
  Axis<acc_t> a;
  a.i0.resize(out);
  a.i1.resize(out);
  a.l0.resize(out);
  a.l1.resize(out);
  const ResizeAxis<acc_t> ra = resize_axis<acc_t>(in, out, align_corners);
  for (int64_t d = 0; d < out; ++d) {
    const Tap<acc_t> t = resize_tap(ra, d);
    a.i0[d] = t.i0;
    a.i1[d] = t.i1;
    a.l0[d] = t.l0;
    a.l1[d] = t.l1;
  }
  return a;
}

template <typename scalar_t, typename acc_t>
struct Resize {
  Args<acc_t, acc_t> A;  // options, tags, prior and the full-resolution maps (z, grad: per tile)
  const scalar_t* z;     // low-resolution logits [B, C1, h, w], any strides
  int64_t B, C1, h, w, sB, sC, sH, sW;
  int64_t H, W;
  const int64_t *y0, *y1, *x0, *x1;  // source rows of each output row, columns of each column
  const int64_t *xo0, *xo1;          // x0/x1 times sW
  const acc_t *ly0, *ly1, *lx0, *lx1;
  int64_t rows_per_chunk, chunks;  // chunks per image
  // backward: the low-resolution gradient being accumulated, zeroed, rows contiguous
  acc_t* dst;
  int64_t dsB, dsC, dsH;
  int parity;  // backward: the chunks of this parity run
  // backward, x direction, per segment of output columns (the same in every output row):
  // source columns jl .. jl + nq − 1, and for each j < L a row of nq (pixel, weight) pairs,
  // row[jl + q] = Σ_j wts[j·nq + q] · g[idx[j·nq + q]] (padding pairs have weight 0).
  const int64_t *seg_jl, *seg_nq, *seg_L, *seg_off;
  const int32_t* seg_idx;
  const acc_t* seg_wts;
};

// Per-thread tiles of this file (ocr_tiles.h keeps its own scratch for the statistics).
template <typename acc_t>
struct ResizeScratch {
  std::vector<acc_t> tile, gtile, row;
  void ensure(int64_t C1, int64_t P, int64_t w) {
    if ((int64_t)tile.size() < C1 * P) {
      tile.resize(C1 * P);
      gtile.resize(C1 * P);
    }
    if ((int64_t)row.size() < C1 * w) row.resize(C1 * w);
  }
};

template <typename acc_t>
ResizeScratch<acc_t>& resize_scratch(int64_t C1, int64_t P, int64_t w) {
  static thread_local ResizeScratch<acc_t> s;
  s.ensure(C1, P, w);
  return s;
}

// The C1 × n interpolated logits of output pixels (y, xs .. xs + n) into tile rows of stride P.
template <typename scalar_t, typename acc_t>
OCR_INLINE void interpolate_tile(const Resize<scalar_t, acc_t>& R, int64_t b, int64_t y,
                                 int64_t xs, int64_t n, acc_t* tile, int64_t P) {
  const scalar_t* r0 = R.z + b * R.sB + R.y0[y] * R.sH;
  const scalar_t* r1 = R.z + b * R.sB + R.y1[y] * R.sH;
  const acc_t a0 = R.ly0[y], a1 = R.ly1[y];
  const int64_t *c0 = R.xo0 + xs, *c1 = R.xo1 + xs;
  const acc_t *w0 = R.lx0 + xs, *w1 = R.lx1 + xs;
  for (int64_t k = 0; k < R.C1; ++k) {
    const scalar_t* p0 = r0 + k * R.sC;
    const scalar_t* p1 = r1 + k * R.sC;
    acc_t* o = tile + k * P;
    OCR_IVDEP
    for (int64_t p = 0; p < n; ++p) {
      const acc_t top = w0[p] * static_cast<acc_t>(p0[c0[p]]) + w1[p] * static_cast<acc_t>(p0[c1[p]]);
      const acc_t bot = w0[p] * static_cast<acc_t>(p1[c0[p]]) + w1[p] * static_cast<acc_t>(p1[c1[p]]);
      o[p] = a0 * top + a1 * bot;
    }
  }
}

// A one-tile view of the output pixels (y, xs .. xs + n) of image b for the ocr_tiles.h kernels:
// logits/gradient rows `tile` (stride P), the maps offset to the segment's first pixel.
template <typename scalar_t, typename acc_t>
OCR_INLINE Args<acc_t, acc_t> tile_view(const Resize<scalar_t, acc_t>& R, int64_t b, int64_t q,
                                        int64_t n, acc_t* tile, acc_t* gtile) {
  Args<acc_t, acc_t> T = R.A;
  const int64_t P = R.A.P;
  T.z = tile;
  T.zl = Layout3{1, R.C1, n, R.C1 * P, P, 1};
  T.grad = gtile;
  T.gl = T.zl;
  T.ic = R.A.ic + b * R.C1;
  const int64_t N = R.H * R.W;
  if (T.target) {
    T.target = R.A.target + b * R.A.tl.sB + q * R.A.tl.sN;
    T.tl = Layout2{0, R.A.tl.sN};
  }
  if (T.ocr_out) T.ocr_out = R.A.ocr_out + b * N + q;
  if (T.ce_out) T.ce_out = R.A.ce_out + b * N + q;
  if (T.loss) {
    T.loss = R.A.loss + b * R.A.ll.sB + q * R.A.ll.sN;
    T.ll = Layout2{0, R.A.ll.sN};
    T.g_ocr = R.A.g_ocr + b * R.A.gol.sB + q * R.A.gol.sN;
    T.gol = Layout2{0, R.A.gol.sN};
  }
  if (T.g_ce) {
    T.g_ce = R.A.g_ce + b * R.A.gcl.sB + q * R.A.gcl.sN;
    T.gcl = Layout2{0, R.A.gcl.sN};
  }
  return T;
}

template <typename scalar_t, typename acc_t, bool CE>
OCR_INLINE void forward_chunks(const Resize<scalar_t, acc_t>& R, int64_t c0, int64_t c1) {
  const int64_t P = R.A.P;
  ResizeScratch<acc_t>& S = resize_scratch<acc_t>(R.C1, P, R.w);
  for (int64_t c = c0; c < c1; ++c) {
    const int64_t b = c / R.chunks, ys = (c % R.chunks) * R.rows_per_chunk;
    const int64_t ye = std::min(R.H, ys + R.rows_per_chunk);
    for (int64_t y = ys; y < ye; ++y) {
      for (int64_t xs = 0; xs < R.W; xs += P) {
        const int64_t n = std::min(P, R.W - xs);
        interpolate_tile(R, b, y, xs, n, S.tile.data(), P);
        const Args<acc_t, acc_t> T = tile_view(R, b, y * R.W + xs, n, S.tile.data(), static_cast<acc_t*>(nullptr));
        forward_tiles<acc_t, acc_t, CE>(T, 0, 1);
      }
    }
  }
}

template <typename scalar_t, typename acc_t, bool CE>
OCR_INLINE void backward_chunks(const Resize<scalar_t, acc_t>& R, int64_t c0, int64_t c1) {
  const int64_t P = R.A.P, C1 = R.C1, w = R.w;
  ResizeScratch<acc_t>& S = resize_scratch<acc_t>(C1, P, w);
  acc_t* row = S.row.data();
  const int64_t per_image = (R.chunks + 1 - R.parity) / 2;  // chunks of this parity
  for (int64_t c = c0; c < c1; ++c) {
    const int64_t b = c / per_image, j = 2 * (c % per_image) + R.parity;
    const int64_t ys = j * R.rows_per_chunk, ye = std::min(R.H, ys + R.rows_per_chunk);
    acc_t* db = R.dst + b * R.dsB;
    for (int64_t y = ys; y < ye; ++y) {
      for (int64_t xs = 0; xs < R.W; xs += P) {
        const int64_t n = std::min(P, R.W - xs);
        interpolate_tile(R, b, y, xs, n, S.tile.data(), P);
        const Args<acc_t, acc_t> T = tile_view(R, b, y * R.W + xs, n, S.tile.data(), S.gtile.data());
        backward_tiles<acc_t, acc_t, CE>(T, 0, 1);
        // x: the tile's gradient into one source row per class (columns jl .. jh), as a
        // gather over the source columns (vectorised across them; no scatter conflicts)
        const int64_t seg = xs / P, jl = R.seg_jl[seg], nq = R.seg_nq[seg], L = R.seg_L[seg];
        const int64_t jh = jl + nq - 1;
        const int32_t* sidx = R.seg_idx + R.seg_off[seg];
        const acc_t* swts = R.seg_wts + R.seg_off[seg];
        for (int64_t k = 0; k < C1; ++k) {
          acc_t* rk = row + k * w + jl;
          const acc_t* g = S.gtile.data() + k * P;
          OCR_IVDEP
          for (int64_t q = 0; q < nq; ++q) rk[q] = 0;
          for (int64_t j = 0; j < L; ++j) {
            const int32_t* ix = sidx + j * nq;
            const acc_t* wt = swts + j * nq;
            OCR_IVDEP
            for (int64_t q = 0; q < nq; ++q) rk[q] += wt[q] * g[ix[q]];
          }
        }
        // y: that row into the two source rows, weighted
        const acc_t a0 = R.ly0[y], a1 = R.ly1[y];
        for (int64_t k = 0; k < C1; ++k) {
          const acc_t* rk = row + k * w;
          acc_t* d0 = db + k * R.dsC + R.y0[y] * R.dsH;
          acc_t* d1 = db + k * R.dsC + R.y1[y] * R.dsH;
          for (int64_t q = jl; q <= jh; ++q) d0[q] += a0 * rk[q];
          for (int64_t q = jl; q <= jh; ++q) d1[q] += a1 * rk[q];
        }
      }
    }
  }
}

#define OCR_RESIZE_ENTRY_POINTS(ISA, TARGET)                                                     \
  template <typename scalar_t, typename acc_t, bool CE>                                          \
  TARGET void resize_forward_##ISA(const Resize<scalar_t, acc_t>& R, int64_t c0, int64_t c1) {   \
    forward_chunks<scalar_t, acc_t, CE>(R, c0, c1);                                              \
  }                                                                                              \
  template <typename scalar_t, typename acc_t, bool CE>                                          \
  TARGET void resize_backward_##ISA(const Resize<scalar_t, acc_t>& R, int64_t c0, int64_t c1) {  \
    backward_chunks<scalar_t, acc_t, CE>(R, c0, c1);                                             \
  }
OCR_RESIZE_ENTRY_POINTS(default, )
#if OCR_KERNELS_ISA_DISPATCH
OCR_RESIZE_ENTRY_POINTS(avx2, OCR_AVX2_TARGET)
OCR_RESIZE_ENTRY_POINTS(avx512, OCR_AVX512_TARGET)
#endif

// Runs f(i0, i1) over [0, n) on the intra-op threads; threads take small chunks from a shared
// counter so that a descheduled thread never holds up a short call. Which thread runs which
// items never changes a result here: every item writes only its own outputs.
template <typename F>
void run_shared(int64_t n, int64_t work_per_item, const F& f) {
  if (n == 0) return;
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), n);
  if (threads <= 1 || n * work_per_item < (int64_t(1) << 15) || at::in_parallel_region()) {
    f(0, n);
    return;
  }
  const int64_t step = std::max<int64_t>(1, n / (threads * 8));
  std::atomic<int64_t> next{0};
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    for (;;) {
      const int64_t i0 = next.fetch_add(step);
      if (i0 >= n) break;
      f(i0, std::min(n, i0 + step));
    }
  });
}

template <typename scalar_t, typename acc_t, bool CE>
void run_chunks(const Resize<scalar_t, acc_t>& R, bool backward) {
  const int64_t per_image = backward ? (R.chunks + 1 - R.parity) / 2 : R.chunks;
  run_shared(R.B * per_image, R.rows_per_chunk * R.W * R.C1, [&](int64_t c0, int64_t c1) {
#if OCR_KERNELS_ISA_DISPATCH
    if (cpu_isa::have_avx512()) {
      if (backward) resize_backward_avx512<scalar_t, acc_t, CE>(R, c0, c1);
      else resize_forward_avx512<scalar_t, acc_t, CE>(R, c0, c1);
      return;
    }
    if (cpu_isa::have_avx2()) {
      if (backward) resize_backward_avx2<scalar_t, acc_t, CE>(R, c0, c1);
      else resize_forward_avx2<scalar_t, acc_t, CE>(R, c0, c1);
      return;
    }
#endif
    if (backward) resize_backward_default<scalar_t, acc_t, CE>(R, c0, c1);
    else resize_forward_default<scalar_t, acc_t, CE>(R, c0, c1);
  });
}

// Everything a call prepares: the checked small tensors, the sampling grid and the chunking.
template <typename acc_t>
struct Grid {
  Axis<acc_t> ay, ax;
  std::vector<int64_t> xo0, xo1;
  int64_t rows_per_chunk, chunks;
  std::vector<int64_t> seg_jl, seg_nq, seg_L, seg_off;
  std::vector<int32_t> seg_idx;
  std::vector<acc_t> seg_wts;
};

template <typename acc_t>
Grid<acc_t> make_grid(const at::Tensor& z, int64_t H, int64_t W, bool align_corners, int64_t P) {
  Grid<acc_t> g;
  const int64_t h = z.size(2), w = z.size(3), C1 = z.size(1);
  g.ay = sampling_axis<acc_t>(h, H, align_corners);
  g.ax = sampling_axis<acc_t>(w, W, align_corners);
  g.xo0.resize(W);
  g.xo1.resize(W);
  for (int64_t x = 0; x < W; ++x) {
    g.xo0[x] = g.ax.i0[x] * z.stride(3);
    g.xo1[x] = g.ax.i1[x] * z.stride(3);
  }
  // ~64K logits per chunk: enough chunks for the threads, then as many more rows as it takes for
  // chunks j and j + 2 to read disjoint source rows (source rows are non-decreasing in the output
  // row: chunk j's last row must read below chunk j + 2's first).
  g.rows_per_chunk = std::max<int64_t>(1, (int64_t(1) << 16) / (std::max<int64_t>(W, P) * C1));
  auto disjoint = [&](int64_t r) {
    for (int64_t ys = 2 * r; ys < H; ys += r)
      if (g.ay.i1[ys - r - 1] >= g.ay.i0[ys]) return false;
    return true;
  };
  while (g.rows_per_chunk < H && !disjoint(g.rows_per_chunk)) g.rows_per_chunk *= 2;
  g.chunks = (H + g.rows_per_chunk - 1) / g.rows_per_chunk;
  // The x gather tables of each column segment: the (pixel, weight) pairs of every source
  // column, in pixel order, padded to the segment's longest list with weight-0 pairs.
  for (int64_t xs = 0; xs < W; xs += P) {
    const int64_t n = std::min(P, W - xs);
    const int64_t jl = g.ax.i0[xs], jh = g.ax.i1[xs + n - 1], nq = jh - jl + 1;
    std::vector<std::vector<std::pair<int32_t, acc_t>>> pairs(nq);
    for (int64_t p = 0; p < n; ++p) {
      pairs[g.ax.i0[xs + p] - jl].emplace_back((int32_t)p, g.ax.l0[xs + p]);
      pairs[g.ax.i1[xs + p] - jl].emplace_back((int32_t)p, g.ax.l1[xs + p]);
    }
    int64_t L = 0;
    for (const auto& v : pairs) L = std::max<int64_t>(L, v.size());
    g.seg_jl.push_back(jl);
    g.seg_nq.push_back(nq);
    g.seg_L.push_back(L);
    g.seg_off.push_back(g.seg_idx.size());
    const size_t at = g.seg_idx.size();
    g.seg_idx.resize(at + L * nq);
    g.seg_wts.resize(at + L * nq);
    for (int64_t q = 0; q < nq; ++q) {
      const int32_t pad = pairs[q].empty() ? 0 : pairs[q][0].first;
      for (int64_t j = 0; j < L; ++j) {
        const bool have = j < (int64_t)pairs[q].size();
        g.seg_idx[at + j * nq + q] = have ? pairs[q][j].first : pad;
        g.seg_wts[at + j * nq + q] = have ? pairs[q][j].second : acc_t(0);
      }
    }
  }
  return g;
}

template <typename scalar_t, typename acc_t>
Resize<scalar_t, acc_t> make_resize(const at::Tensor& z, const Grid<acc_t>& g, const ResizedChecked& K,
                                    double margin, double threshold, int64_t group,
                                    int64_t pixels, int64_t ignore_index, int64_t P) {
  const int64_t H = K.H, W = K.W;
  Resize<scalar_t, acc_t> R{};
  R.A.ic = K.ic.data_ptr<uint8_t>();
  R.A.prior = K.prior.numel() ? K.prior.data_ptr<acc_t>() : nullptr;
  R.A.margin = (acc_t)margin;
  R.A.threshold = (acc_t)threshold;
  R.A.group = (int)group;
  R.A.pixels = (int)pixels;
  R.A.P = P;
  if (K.target.defined()) {
    R.A.target = K.target.data_ptr<int64_t>();
    R.A.tl = layout2(K.target);
    R.A.ignore_index = ignore_index;
  }
  R.z = z.data_ptr<scalar_t>();
  R.B = z.size(0);
  R.C1 = z.size(1);
  R.h = z.size(2);
  R.w = z.size(3);
  R.sB = z.stride(0);
  R.sC = z.stride(1);
  R.sH = z.stride(2);
  R.sW = z.stride(3);
  R.H = H;
  R.W = W;
  R.y0 = g.ay.i0.data();
  R.y1 = g.ay.i1.data();
  R.ly0 = g.ay.l0.data();
  R.ly1 = g.ay.l1.data();
  R.x0 = g.ax.i0.data();
  R.x1 = g.ax.i1.data();
  R.lx0 = g.ax.l0.data();
  R.lx1 = g.ax.l1.data();
  R.xo0 = g.xo0.data();
  R.xo1 = g.xo1.data();
  R.rows_per_chunk = g.rows_per_chunk;
  R.chunks = g.chunks;
  R.seg_jl = g.seg_jl.data();
  R.seg_nq = g.seg_nq.data();
  R.seg_L = g.seg_L.data();
  R.seg_off = g.seg_off.data();
  R.seg_idx = g.seg_idx.data();
  R.seg_wts = g.seg_wts.data();
  return R;
}

// Tile width: a tile of C1 × P values within ~64 KiB, P a multiple of 16 and at most one row.
int64_t resize_tile_width(int64_t C1, int64_t elem, int64_t W) {
  int64_t p = (64 * 1024) / (C1 * elem);
  p = std::max<int64_t>(16, std::min<int64_t>(512, (p / 16) * 16));
  return std::min(p, (W + 15) / 16 * 16);
}


std::tuple<at::Tensor, at::Tensor> forward_resized_cpu(
    const at::Tensor& logits, const c10::optional<at::Tensor>& target, const at::Tensor& tags,
    const c10::optional<at::Tensor>& prior, at::IntArrayRef size, bool align_corners,
    double margin, double threshold, int64_t group, int64_t pixels, int64_t ignore_index) {
  const ResizedChecked K = check_resized(logits, target, tags, prior, size, group, pixels);
  const at::ScalarType acc = math_dtype(logits.scalar_type());
  const auto mopts = logits.options().dtype(acc);
  at::Tensor ocr_map = at::empty({logits.size(0), K.H, K.W}, mopts);
  at::Tensor ce_map = K.target.defined() ? at::empty_like(ocr_map) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "ocr_resized_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const int64_t P = resize_tile_width(logits.size(1), sizeof(acc_t), K.W);
    const Grid<acc_t> g = make_grid<acc_t>(logits, K.H, K.W, align_corners, P);
    auto R = make_resize<scalar_t, acc_t>(logits, g, K, margin, threshold, group, pixels,
                                          ignore_index, P);
    R.A.ocr_out = ocr_map.data_ptr<acc_t>();
    if (K.target.defined()) {
      R.A.ce_out = ce_map.data_ptr<acc_t>();
      run_chunks<scalar_t, acc_t, true>(R, false);
    } else {
      run_chunks<scalar_t, acc_t, false>(R, false);
    }
  });
  return {ocr_map, ce_map};
}

at::Tensor backward_resized_cpu(const at::Tensor& grad_ocr_in,
                                const c10::optional<at::Tensor>& grad_ce_in,
                                const at::Tensor& logits, const c10::optional<at::Tensor>& target,
                                const at::Tensor& tags, const c10::optional<at::Tensor>& prior,
                                const at::Tensor& loss_in, bool align_corners, double threshold,
                                int64_t group, int64_t pixels, int64_t ignore_index) {
  const at::IntArrayRef size = loss_in.sizes().slice(1);
  const ResizedChecked K = check_resized(logits, target, tags, prior, size, group, pixels);
  const at::ScalarType acc = math_dtype(logits.scalar_type());
  const ResizedBackwardMaps M = resized_backward_maps(loss_in, grad_ocr_in, grad_ce_in, logits, K);
  const at::Tensor &loss = M.loss, &g_ocr = M.g_ocr, &g_ce = M.g_ce;
  at::Tensor grad = at::empty_like(logits);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, logits.scalar_type(), "ocr_resized_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const int64_t P = resize_tile_width(logits.size(1), sizeof(acc_t), K.W);
    const Grid<acc_t> g = make_grid<acc_t>(logits, K.H, K.W, align_corners, P);
    // the gradient itself when it can accumulate in place, else one low-resolution buffer
    const bool in_place = grad.scalar_type() == acc && grad.stride(3) == 1;
    at::Tensor dst = in_place ? grad.zero_() : at::zeros(logits.sizes(), logits.options().dtype(acc));
    auto R = make_resize<scalar_t, acc_t>(logits, g, K, 0.0, threshold, group, pixels,
                                          ignore_index, P);
    R.A.loss = loss.data_ptr<acc_t>();
    R.A.ll = layout2(loss);
    R.A.g_ocr = g_ocr.data_ptr<acc_t>();
    R.A.gol = layout2(g_ocr);
    R.dst = dst.data_ptr<acc_t>();
    R.dsB = dst.stride(0);
    R.dsC = dst.stride(1);
    R.dsH = dst.stride(2);
    if (K.target.defined()) {
      R.A.g_ce = g_ce.data_ptr<acc_t>();
      R.A.gcl = layout2(g_ce);
    }
    for (int parity = 0; parity < 2; ++parity) {  // even chunks, then odd ones
      R.parity = parity;
      if (K.target.defined()) run_chunks<scalar_t, acc_t, true>(R, true);
      else run_chunks<scalar_t, acc_t, false>(R, true);
    }
    if (!in_place) grad.copy_(dst);
  });
  return grad;
}

// One CUDA block on the CPU: a CPU thread per CUDA thread, sharing one shared-memory buffer and
// a real barrier (so that the hook runs ocr_resize_thread.h's block functions, barriers included,
// as the GPU does).
class EmulatedBarrier {
 public:
  explicit EmulatedBarrier(int n) : n_(n) {}
  // the number of threads whose p is true (also a plain barrier)
  int wait_count(bool p) {
    std::unique_lock<std::mutex> lk(m_);
    const uint64_t gen = gen_;
    acc_ += p ? 1 : 0;
    if (++arrived_ == n_) {
      result_ = acc_;
      acc_ = 0;
      arrived_ = 0;
      ++gen_;
      cv_.notify_all();
      return result_;
    }
    cv_.wait(lk, [&] { return gen_ != gen; });
    return result_;
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  int n_, arrived_ = 0, acc_ = 0, result_ = 0;
  uint64_t gen_ = 0;
};

struct CpuBlock {
  int tid, n;
  EmulatedBarrier* bar;
  void sync() const { bar->wait_count(false); }
  bool any(bool p) const { return bar->wait_count(p) > 0; }
  int count(bool p) const { return bar->wait_count(p); }
};

// f(block) on `threads` CPU threads, one block, its shared memory `smem_bytes`.
template <typename F>
void run_block(int threads, size_t smem_bytes, const F& f) {
  std::vector<double> smem((smem_bytes + sizeof(double) - 1) / sizeof(double));
  EmulatedBarrier bar(threads);
  std::vector<std::thread> pool;
  pool.reserve(threads);
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] { f(CpuBlock{t, threads, &bar}, static_cast<void*>(smem.data())); });
  for (auto& th : pool) th.join();
}

template <typename scalar_t, typename acc_t, int GROUP, bool CE, typename Load>
void emulate_fast(const ResizeView<scalar_t, acc_t>& V, const ResizeArgs& A, const ResizePlan& P,
                  const Load& load) {
  // one block over every row / cell (the GPU's blocks take disjoint ranges of them)
  run_block(P.threads, P.smem_fwd, [&](const CpuBlock& blk, void* smem) {
    resized_forward_block<scalar_t, acc_t, GROUP, CE>(blk, V, P, 0, A.B * A.H, smem, load);
  });
  run_block(P.threads, P.smem_bwd, [&](const CpuBlock& blk, void* smem) {
    resized_backward_block<scalar_t, acc_t, GROUP, CE>(blk, V, P, 0, A.B * A.h, smem, load);
  });
  scalar_t* gp = static_cast<scalar_t*>(A.grad);
  const int64_t hw = A.h * A.w, plane = A.B * A.C1 * hw;
  for (int64_t b = 0; b < A.B; ++b)
    for (int64_t k = 0; k < A.C1; ++k)
      for (int64_t i = 0; i < A.h; ++i) {
        bool from_prev, own;
        resize_gather_rows(V.ay, i, &from_prev, &own);
        for (int64_t j = 0; j < A.w; ++j)
          gp[b * A.gsB + k * A.gsC + i * A.gsH + j * A.gsW] = static_cast<scalar_t>(
              resized_fast_gather(V.corners + (b * A.C1 + k) * hw + i * A.w + j, plane, A.w,
                                  from_prev, own));
      }
}

template <typename scalar_t, typename acc_t, bool CE, typename Load>
void emulate_fast_group(const ResizeView<scalar_t, acc_t>& V, const ResizeArgs& A,
                        const ResizePlan& P, const Load& load) {
  switch (A.group) {
    case GROUP_ADA: return emulate_fast<scalar_t, acc_t, GROUP_ADA, CE>(V, A, P, load);
    case GROUP_MAX: return emulate_fast<scalar_t, acc_t, GROUP_MAX, CE>(V, A, P, load);
    default: return emulate_fast<scalar_t, acc_t, GROUP_ALL, CE>(V, A, P, load);
  }
}

// The CUDA kernels' code on the CPU, as a test hook so that CI checks the GPU's code: the path
// resize_plan picks (as the CUDA launcher does, for a device that allows a block
// kResizeFastSmem): fast, ocr_resize_thread.h's block functions on emulated blocks, then the
// gather; or generic, ocr_resize_pixel.h's per-thread functions one thread at a time (forward:
// one thread per output pixel; backward: one warp per cell, its 32 lanes emulated in turn between
// the warp's synchronisation points; then one thread per low-resolution logit). Returns (ce_map,
// ocr_map, grad) for the upstream gradients (grad_ce, grad_ocr), σ recovered from the ocr_map it
// computes.
std::tuple<at::Tensor, at::Tensor, at::Tensor> pixelwise_seg_ocr_resized_cpu(
    const at::Tensor& logits_in, const c10::optional<at::Tensor>& target,
    const at::Tensor& tags, const c10::optional<at::Tensor>& prior,
    const c10::optional<at::Tensor>& grad_ce_in, const at::Tensor& grad_ocr_in,
    at::IntArrayRef size, bool align_corners, double margin, double threshold, int64_t group,
    int64_t pixels, int64_t ignore_index) {
  const ResizedChecked K = check_resized(logits_in, target, tags, prior, size, group, pixels);
  const at::Tensor z = logits_in;
  const auto mopts = z.options().dtype(math_dtype(z.scalar_type()));
  at::Tensor ocr_map = at::empty({z.size(0), K.H, K.W}, mopts);
  at::Tensor ce_map = at::zeros_like(ocr_map);
  // σ comes from the ocr_map this call writes (forward first, as on the GPU)
  const ResizedBackwardMaps M = resized_backward_maps(ocr_map, grad_ocr_in, grad_ce_in, z, K);
  const bool f64 = z.scalar_type() == at::kDouble;
  const ResizePlan plan =
      f64 ? resize_plan<double>(z.size(1), z.size(2), z.size(3), K.W, align_corners)
          : resize_plan<float>(z.size(1), z.size(2), z.size(3), K.W, align_corners);
  at::Tensor corners =
      at::empty({plan.fast ? 2 : 4, z.size(0), z.size(1), z.size(2), z.size(3)}, mopts);
  at::Tensor grad = grad_like(z);
  ResizeArgs A = resize_args(z, K, align_corners, margin, threshold, group, pixels, ignore_index);
  A.ocr_out = ocr_map.data_ptr();
  if (K.target.defined()) A.ce_out = ce_map.data_ptr();
  set_backward_maps(A, M);
  A.corners = corners.data_ptr();
  set_grad(A, grad);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "ocr_pixelwise_resized_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const ResizeView<scalar_t, acc_t> V = resize_view<scalar_t, acc_t>(A);
    auto load = [](scalar_t v) { return static_cast<acc_t>(v); };
    if (plan.fast) {
      if (K.target.defined()) emulate_fast_group<scalar_t, acc_t, true>(V, A, plan, load);
      else emulate_fast_group<scalar_t, acc_t, false>(V, A, plan, load);
      return;
    }
    const int64_t B = A.B, C1 = A.C1, h = A.h, w = A.w, H = A.H, W = A.W;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t y = 0; y < H; ++y)
        for (int64_t x = 0; x < W; ++x) resized_forward_pixel(V, b, y, x, load);
    std::vector<acc_t> tile(C1 * kResizeTileStride), wts(4 * kResizeLanes);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t ci = 0; ci < h; ++ci)
        for (int64_t cj = 0; cj < w; ++cj) {
          int64_t y0, ny, x0, nx;
          resize_cell_range(V.ay, ci, &y0, &ny);
          resize_cell_range(V.ax, cj, &x0, &nx);
          if (ny * nx == 0) {
            for (int lane = 0; lane < kResizeLanes; ++lane) resized_zero_lane(V, b, ci, cj, lane);
            continue;
          }
          for (int64_t s = 0; s < resize_batches(ny, nx); ++s) {
            for (int lane = 0; lane < kResizeLanes; ++lane)
              resized_backward_lane(V, b, y0, ny, x0, nx, s * kResizeLanes, lane,
                                    tile.data() + lane, wts.data() + lane, load);
            for (int lane = 0; lane < kResizeLanes; ++lane)
              resized_reduce_lane(V, b, ci, cj, s == 0, lane, tile.data(), wts.data());
          }
        }
    scalar_t* gp = static_cast<scalar_t*>(A.grad);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t k = 0; k < C1; ++k)
        for (int64_t i = 0; i < h; ++i)
          for (int64_t j = 0; j < w; ++j)
            gp[b * A.gsB + k * A.gsC + i * A.gsH + j * A.gsW] =
                static_cast<scalar_t>(resized_gather(V, b, k, i, j));
  });
  return {ce_map, ocr_map, grad};
}

}  // namespace

TORCH_LIBRARY_IMPL(ocr_kernels, CPU, m) {
  m.impl("_pixelwise_seg_ocr_resized", &pixelwise_seg_ocr_resized_cpu);
  ResizedOps<forward_resized_cpu, backward_resized_cpu>::register_impls(m);
}

}  // namespace ocr
