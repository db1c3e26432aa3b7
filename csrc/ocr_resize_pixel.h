// The bilinear sampling grid of the fused-upsampling ops and the per-thread work of their CUDA
// kernels, shared by the CPU kernel (csrc/cpu/ocr_resize.cpp: the grid), the CUDA kernels
// (csrc/cuda/ocr_resize_kernel.cu) and the CPU test hook `_pixelwise_seg_ocr_resized`, which runs
// these functions one thread at a time so that CI checks the exact code the GPU runs. Plain C++
// over raw pointers, like ocr_pixel.h.
//
// Grid: torch's upsample_bilinear2d given an output size (ATen's area_pixel_compute_scale,
// area_pixel_compute_source_index, compute_source_index_and_lambda) in the math dtype: output
// index d reads source indices i0(d) <= i1(d) with weights l0(d), l1(d); i0 is non-decreasing in d.
//
// Backward without float atomics: output pixels are grouped into cells, cell (ci, cj) holding the
// pixels whose top-left tap is (ci, cj), so every pixel of a cell feeds the same four
// low-resolution pixels (its corners: (ci or i1, cj or j1)). One warp takes one cell: each lane
// computes one pixel's gradient over the C+1 classes into a scratch column (shared memory on the
// GPU), then lane l sums, for classes l, l+32, ..., the weighted columns of the batch in pixel
// order into the cell's four corner entries of a [4, B, C+1, h, w] buffer, which only this warp
// writes. A last pass sums, for every low-resolution pixel, the corner entries of the cells that
// feed it in a fixed order. Each output pixel's statistics are computed once.
#pragma once

#include <stdint.h>

#include "ocr_pixel.h"

namespace ocr {

constexpr int kResizeLanes = 32;  // pixels per batch of a cell (one warp)
// Row stride of the scratch tile [C1, kResizeLanes]: one more than the lanes, so that the reduce
// (lanes on different classes, same pixel) hits 32 different shared-memory banks.
constexpr int kResizeTileStride = kResizeLanes + 1;

// One output axis of the resize: `out` indices sampled from `in`.
template <typename acc_t>
struct ResizeAxis {
  int64_t in, out;
  acc_t scale;
  bool align_corners;
};

template <typename acc_t>
OCR_HD ResizeAxis<acc_t> resize_axis(int64_t in, int64_t out, bool align_corners) {
  ResizeAxis<acc_t> a;
  a.in = in;
  a.out = out;
  a.align_corners = align_corners;
  a.scale = align_corners ? (out > 1 ? acc_t(in - 1) / acc_t(out - 1) : acc_t(0))
                          : acc_t(in) / acc_t(out);
  return a;
}

template <typename acc_t>
struct Tap {
  int64_t i0, i1;
  acc_t l0, l1;
};

// Source indices and weights of output index d: out[d] = l0·in[i0] + l1·in[i1].
template <typename acc_t>
OCR_HD Tap<acc_t> resize_tap(const ResizeAxis<acc_t>& a, int64_t d) {
  Tap<acc_t> t;
  if (a.in == a.out) {
    t.i0 = t.i1 = d;
    t.l0 = acc_t(1);
    t.l1 = acc_t(0);
    return t;
  }
  acc_t real = a.align_corners ? a.scale * acc_t(d)
                               : a.scale * (acc_t(d) + acc_t(0.5)) - acc_t(0.5);
  if (!a.align_corners && real < acc_t(0)) real = acc_t(0);
  // real >= 0 here, so truncation is floor
  int64_t i = static_cast<int64_t>(real);
  if (i > a.in - 1) i = a.in - 1;
  acc_t l = real - acc_t(i);
  l = l < acc_t(0) ? acc_t(0) : (l > acc_t(1) ? acc_t(1) : l);
  t.i0 = i;
  t.i1 = i + (i < a.in - 1 ? 1 : 0);
  t.l1 = l;
  t.l0 = acc_t(1) - l;
  return t;
}

// The upper tap of the pixels of cell c (their i0 == c).
template <typename acc_t>
OCR_HD int64_t resize_upper(const ResizeAxis<acc_t>& a, int64_t c) {
  return a.in == a.out ? c : c + (c < a.in - 1 ? 1 : 0);
}

// The number of halvings a binary search over n items takes (the bit length of n).
OCR_HD int resize_search_steps(int64_t n) {
  int steps = 0;
  for (; n > 0; n >>= 1) ++steps;
  return steps;
}

// The first output index whose i0 is >= i (out when none): a binary search, i0 being
// non-decreasing.
template <typename acc_t>
OCR_HD int64_t resize_first_at_least(const ResizeAxis<acc_t>& a, int64_t i) {
  int64_t first = 0, count = a.out;
  const int steps = resize_search_steps(a.out);
  for (int s = 0; s < steps; ++s) {
    if (count <= 0) break;
    const int64_t half = count / 2;
    if (resize_tap(a, first + half).i0 < i) {
      first += half + 1;
      count -= half + 1;
    } else {
      count = half;
    }
  }
  return first;
}

// Output indices [*first, *first + *n) of cell c along one axis (n = 0 when no pixel has i0 == c).
template <typename acc_t>
OCR_HD void resize_cell_range(const ResizeAxis<acc_t>& a, int64_t c, int64_t* first, int64_t* n) {
  *first = resize_first_at_least(a, c);
  *n = resize_first_at_least(a, c + 1) - *first;
}

// Everything the per-thread functions read and write. Low-resolution logits [B, C1, h, w] of any
// strides; maps [B, H, W] walked as (b, p = y·W + x) with Layout2 strides; outputs contiguous.
template <typename scalar_t, typename acc_t>
struct ResizeView {
  const scalar_t* z;
  int64_t B, C1, sB, sC, sH, sW;
  ResizeAxis<acc_t> ay, ax;  // h -> H, w -> W
  const uint8_t* ic;         // [B, C1]
  const acc_t* prior;        // [C1, C1] (ada only)
  acc_t margin, threshold;
  int group, pixels;
  const int64_t* target;  // null: no cross-entropy term
  Layout2 tl;
  int64_t ignore_index;
  acc_t* ocr_out;  // forward: [B, H·W]
  acc_t* ce_out;
  const acc_t* loss;  // backward inputs
  Layout2 ll;
  const acc_t* g_ocr;
  Layout2 gol;
  const acc_t* g_ce;
  Layout2 gcl;
  acc_t* corners;  // backward: [4, B, C1, h, w], corner a·2 + c = (row tap a, column tap c)
};

// The interpolated logits of output pixel (y, x) of image b, as ocr_pixel.h's Z(k): its four
// source pixels' pointers and weights, so that each class costs one offset, four loads and four
// multiply-adds. Load converts one stored logit to acc_t.
template <typename scalar_t, typename acc_t, typename Load>
struct ResizedZ {
  const scalar_t *q00, *q01, *q10, *q11;
  int64_t sC;
  acc_t w00, w01, w10, w11;
  Load load;
  OCR_HD acc_t operator()(int64_t k) const {
    const int64_t o = k * sC;
    return (w00 * load(q00[o]) + w01 * load(q01[o])) + (w10 * load(q10[o]) + w11 * load(q11[o]));
  }
};

template <typename scalar_t, typename acc_t, typename Load>
OCR_HD ResizedZ<scalar_t, acc_t, Load> resized_z(const ResizeView<scalar_t, acc_t>& V, int64_t b,
                                                 const Tap<acc_t>& ty, const Tap<acc_t>& tx,
                                                 const Load& load) {
  const scalar_t* r0 = V.z + b * V.sB + ty.i0 * V.sH;
  const scalar_t* r1 = V.z + b * V.sB + ty.i1 * V.sH;
  ResizedZ<scalar_t, acc_t, Load> z{r0 + tx.i0 * V.sW, r0 + tx.i1 * V.sW,
                                    r1 + tx.i0 * V.sW, r1 + tx.i1 * V.sW, V.sC,
                                    ty.l0 * tx.l0, ty.l0 * tx.l1, ty.l1 * tx.l0, ty.l1 * tx.l1,
                                    load};
  return z;
}

// Forward of output pixel (y, x) of image b: one CUDA thread.
template <typename scalar_t, typename acc_t, typename Load>
OCR_HD void resized_forward_pixel(const ResizeView<scalar_t, acc_t>& V, int64_t b, int64_t y,
                                  int64_t x, const Load& load) {
  const auto z = resized_z(V, b, resize_tap(V.ay, y), resize_tap(V.ax, x), load);
  const int64_t p = y * V.ax.out + x;
  const bool ce = V.target != nullptr;
  const int64_t t = ce ? V.target[b * V.tl.sB + p * V.tl.sN] : 0;
  acc_t cev = 0;
  const acc_t l = pixel_forward<acc_t>(z, V.ic + b * V.C1, V.prior, V.C1, V.margin, V.threshold,
                                       V.group, V.pixels, ce, t, V.ignore_index, &cev);
  const int64_t o = b * V.ay.out * V.ax.out + p;
  V.ocr_out[o] = l;
  if (ce) V.ce_out[o] = cev;
}

// The number of kResizeLanes-pixel batches of a cell of ny × nx output pixels.
OCR_HD int64_t resize_batches(int64_t ny, int64_t nx) {
  return (ny * nx + kResizeLanes - 1) / kResizeLanes;
}

// Backward, lane `lane` of the warp on cell (ci, cj) of image b, batch starting at pixel `start`
// of the cell (pixels in row-major order over the cell's ny × nx output pixels): the gradient of
// the lane's pixel with respect to its interpolated logits into col[k·kResizeTileStride] (zeros for a
// lane past the cell's end), and its four corner weights into wts[c·kResizeLanes]. col and wts
// point at the lane's entries (tile + lane, weights + lane).
template <typename scalar_t, typename acc_t, typename Load>
OCR_HD void resized_backward_lane(const ResizeView<scalar_t, acc_t>& V, int64_t b, int64_t y0,
                                  int64_t ny, int64_t x0, int64_t nx, int64_t start, int lane,
                                  acc_t* col, acc_t* wts, const Load& load) {
  const int64_t q = start + lane;
  if (q >= ny * nx) {
    for (int64_t k = 0; k < V.C1; ++k) col[k * kResizeTileStride] = acc_t(0);
    for (int c = 0; c < 4; ++c) wts[c * kResizeLanes] = acc_t(0);
    return;
  }
  const int64_t y = y0 + q / nx, x = x0 + q % nx;
  const Tap<acc_t> ty = resize_tap(V.ay, y), tx = resize_tap(V.ax, x);
  wts[0] = ty.l0 * tx.l0;
  wts[kResizeLanes] = ty.l0 * tx.l1;
  wts[2 * kResizeLanes] = ty.l1 * tx.l0;
  wts[3 * kResizeLanes] = ty.l1 * tx.l1;
  const auto z = resized_z(V, b, ty, tx, load);
  auto store = [&](int64_t k, acc_t v) { col[k * kResizeTileStride] = v; };
  const int64_t p = y * V.ax.out + x;
  int64_t t = 0;
  acc_t gce = 0;
  if (V.target != nullptr) {
    t = V.target[b * V.tl.sB + p * V.tl.sN];
    gce = t == V.ignore_index ? acc_t(0) : V.g_ce[b * V.gcl.sB + p * V.gcl.sN];
  }
  pixel_backward<acc_t>(z, store, V.ic + b * V.C1, V.prior, V.C1, V.threshold, V.group, V.pixels,
                        V.loss[b * V.ll.sB + p * V.ll.sN], V.g_ocr[b * V.gol.sB + p * V.gol.sN],
                        gce, t);
}

// Backward, lane `lane` after a batch's columns are written: for classes lane, lane + 32, ...,
// the batch's weighted columns summed in pixel order into the cell's four corner entries (written
// by the first batch, accumulated by the later ones). tile: [C1, kResizeTileStride],
// wts: [4, kResizeLanes].
template <typename scalar_t, typename acc_t>
OCR_HD void resized_reduce_lane(const ResizeView<scalar_t, acc_t>& V, int64_t b, int64_t ci,
                                int64_t cj, bool first_batch, int lane, const acc_t* tile,
                                const acc_t* wts) {
  const int64_t h = V.ay.in, w = V.ax.in;
  const int64_t plane = V.B * V.C1 * h * w, classes = V.C1;
  for (int64_t k = lane; k < classes; k += kResizeLanes) {
    const acc_t* g = tile + k * kResizeTileStride;
    acc_t s[4] = {acc_t(0), acc_t(0), acc_t(0), acc_t(0)};
    for (int p = 0; p < kResizeLanes; ++p)
      for (int c = 0; c < 4; ++c) s[c] += wts[c * kResizeLanes + p] * g[p];
    acc_t* e = V.corners + ((b * V.C1 + k) * h + ci) * w + cj;
    for (int c = 0; c < 4; ++c) e[c * plane] = first_batch ? s[c] : e[c * plane] + s[c];
  }
}

// The corner entries of an empty cell (no output pixel has it as top-left tap: downsampling).
template <typename scalar_t, typename acc_t>
OCR_HD void resized_zero_lane(const ResizeView<scalar_t, acc_t>& V, int64_t b, int64_t ci,
                              int64_t cj, int lane) {
  const int64_t h = V.ay.in, w = V.ax.in;
  const int64_t plane = V.B * V.C1 * h * w, classes = V.C1;
  for (int64_t k = lane; k < classes; k += kResizeLanes) {
    acc_t* e = V.corners + ((b * V.C1 + k) * h + ci) * w + cj;
    for (int c = 0; c < 4; ++c) e[c * plane] = acc_t(0);
  }
}

// The gradient of low-resolution logit (b, k, i, j): the corner entries of the cells that feed
// it, in a fixed order (cell row i then i − 1, cell column j then j − 1).
template <typename scalar_t, typename acc_t>
OCR_HD acc_t resized_gather(const ResizeView<scalar_t, acc_t>& V, int64_t b, int64_t k, int64_t i,
                            int64_t j) {
  const int64_t h = V.ay.in, w = V.ax.in;
  const int64_t plane = V.B * V.C1 * h * w;
  const acc_t* base = V.corners + (b * V.C1 + k) * h * w;
  acc_t s = acc_t(0);
  for (int da = 0; da < 2; ++da) {
    const int64_t ci = i - da;
    if (ci < 0) continue;
    for (int a = 0; a < 2; ++a) {
      if ((a == 0 ? ci : resize_upper(V.ay, ci)) != i) continue;
      for (int dc = 0; dc < 2; ++dc) {
        const int64_t cj = j - dc;
        if (cj < 0) continue;
        for (int c = 0; c < 2; ++c) {
          if ((c == 0 ? cj : resize_upper(V.ax, cj)) != j) continue;
          s += base[(a * 2 + c) * plane + ci * w + cj];
        }
      }
    }
  }
  return s;
}

// The untyped form of a call that the CUDA launchers (csrc/cuda/ocr_resize_launch.h) and the CPU
// test hook take; resize_view types it. Map outputs contiguous [B, H·W]; grad [B, C1, h, w] with
// its own strides.
struct ResizeArgs {
  int dtype;  // ocr_kernels::DType (csrc/common.h) of the logits and of the gradient
  const void* z;
  int64_t B, C1, h, w, sB, sC, sH, sW;
  int64_t H, W;
  bool align_corners;
  const uint8_t* ic;
  const void* prior;
  double margin, threshold;
  int group, pixels;
  const int64_t* target;
  Layout2 tl;
  int64_t ignore_index;
  void* ocr_out;
  void* ce_out;
  const void* loss;
  Layout2 ll;
  const void* g_ocr;
  Layout2 gol;
  const void* g_ce;
  Layout2 gcl;
  void* corners;  // [4, B, C1, h, w] in the math dtype
  void* grad;
  int64_t gsB, gsC, gsH, gsW;
};

template <typename scalar_t, typename acc_t>
OCR_HD ResizeView<scalar_t, acc_t> resize_view(const ResizeArgs& A) {
  ResizeView<scalar_t, acc_t> V;
  V.z = static_cast<const scalar_t*>(A.z);
  V.B = A.B;
  V.C1 = A.C1;
  V.sB = A.sB;
  V.sC = A.sC;
  V.sH = A.sH;
  V.sW = A.sW;
  V.ay = resize_axis<acc_t>(A.h, A.H, A.align_corners);
  V.ax = resize_axis<acc_t>(A.w, A.W, A.align_corners);
  V.ic = A.ic;
  V.prior = static_cast<const acc_t*>(A.prior);
  V.margin = (acc_t)A.margin;
  V.threshold = (acc_t)A.threshold;
  V.group = A.group;
  V.pixels = A.pixels;
  V.target = A.target;
  V.tl = A.tl;
  V.ignore_index = A.ignore_index;
  V.ocr_out = static_cast<acc_t*>(A.ocr_out);
  V.ce_out = static_cast<acc_t*>(A.ce_out);
  V.loss = static_cast<const acc_t*>(A.loss);
  V.ll = A.ll;
  V.g_ocr = static_cast<const acc_t*>(A.g_ocr);
  V.gol = A.gol;
  V.g_ce = static_cast<const acc_t*>(A.g_ce);
  V.gcl = A.gcl;
  V.corners = static_cast<acc_t*>(A.corners);
  return V;
}

}  // namespace ocr
