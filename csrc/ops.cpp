// Every op schema of the ocr_kernels extension, defined once. Kernels are registered per dispatch
// key in csrc/cpu/*.cpp (CPU) and csrc/cuda/*_binding.cpp (CUDA); fake (meta) and autograd
// registrations live in Python (ocr_kernels/{ocr,seg,wood}/csrc_ops.py), so torch.compile and
// opcheck work.
#include <torch/library.h>

TORCH_LIBRARY(ocr_kernels, m) {
  // ---- OCR and the segmentation objective (docs/semantics.md §1, §1b) --------------------------
  // group_split / pixels are the integer codes of ocr_kernels/_options.py. Maps are [B, *spatial]
  // in fp32 (fp64 for fp64 logits).
  // Returns (loss_map, mask): mask is int32 [B, ceil(N / 32)], bit q % 32 of word q / 32 set
  // where the loss of pixel q (of the N spatial pixels) is not 0 (csrc/ocr_thread.h mask_words),
  // saved for the backward, not differentiable.
  m.def(
      "ocr_loss_map(Tensor logits, Tensor tags, Tensor? prior, float margin, float threshold, "
      "int group_split, int pixels) -> (Tensor, Tensor)");
  // grad_map may have any strides (a stride-0 expanded gradient of "mean"/"sum" included);
  // loss_map and mask are the forward's outputs: σ(s) = 1 − exp(−L) is recovered from the loss,
  // read (CUDA) only where the mask has a bit.
  m.def(
      "ocr_loss_map_backward(Tensor grad_map, Tensor logits, Tensor tags, Tensor? prior, "
      "Tensor loss_map, Tensor mask, float margin, float threshold, int group_split, int pixels) "
      "-> Tensor");
  // Fused segmentation objective: (ce_map, ocr_map) from one read of the logits.
  m.def(
      "seg_ocr_loss_maps(Tensor logits, Tensor target, Tensor tags, Tensor? prior, float margin, "
      "float threshold, int group_split, int pixels, int ignore_index) -> (Tensor, Tensor)");
  m.def(
      "seg_ocr_loss_maps_backward(Tensor grad_ce, Tensor grad_ocr, Tensor logits, Tensor target, "
      "Tensor tags, Tensor? prior, Tensor ocr_map, float margin, float threshold, int group_split, "
      "int pixels, int ignore_index) -> Tensor");
  // The segmentation objective's forward and gradient from one read of the logits (CUDA):
  // (ce_map, ocr_map) as seg_ocr_loss_maps returns them (ce_map not weighted), and grad =
  // d/dlogits of coef[0]·Σ_p ce_weight_p·ce_p + coef[1]·Σ_p ocr_p, shaped and strided like the
  // logits, in their dtype. coef: 1-D, 2 values in the math dtype on the logits' device (no host
  // read); ce_weight: None (1) or [B, *spatial] in the math dtype, any strides. The backward is
  // scale_grad_ of grad by the upstream gradient.
  m.def(
      "seg_ocr_objective(Tensor logits, Tensor target, Tensor tags, Tensor? prior, "
      "Tensor? ce_weight, Tensor coef, float margin, float threshold, int group_split, "
      "int pixels, int ignore_index) -> (Tensor, Tensor, Tensor)");
  // grad *= g unless g == 1 exactly (decided on the device: no host synchronisation); g: one
  // value in grad's math dtype on its device; grad dense and non-overlapping.
  m.def("scale_grad_(Tensor(a!) grad, Tensor g) -> ()");
  // The same with the bilinear upsampling of the logits fused in (CPU and CUDA): logits
  // [B, C+1, h, w] are resized to size (seg: the target's [H, W]) exactly as
  // F.interpolate(mode="bilinear", align_corners=align_corners) would, inside the kernel; maps
  // are [B, H, W], the gradient is the low-resolution logits'. The backward takes the output size
  // from loss_map / ocr_map.
  m.def(
      "ocr_loss_map_resized(Tensor logits, Tensor tags, Tensor? prior, int[] size, "
      "bool align_corners, float margin, float threshold, int group_split, int pixels) -> Tensor");
  m.def(
      "ocr_loss_map_resized_backward(Tensor grad_map, Tensor logits, Tensor tags, Tensor? prior, "
      "Tensor loss_map, bool align_corners, float margin, float threshold, int group_split, "
      "int pixels) -> Tensor");
  m.def(
      "seg_ocr_loss_maps_resized(Tensor logits, Tensor target, Tensor tags, Tensor? prior, "
      "bool align_corners, float margin, float threshold, int group_split, int pixels, "
      "int ignore_index) -> (Tensor, Tensor)");
  m.def(
      "seg_ocr_loss_maps_resized_backward(Tensor grad_ce, Tensor grad_ocr, Tensor logits, "
      "Tensor target, Tensor tags, Tensor? prior, Tensor ocr_map, bool align_corners, "
      "float margin, float threshold, int group_split, int pixels, int ignore_index) -> Tensor");
  // Test hook (CPU only): runs ocr_pixel.h's per-pixel functions one pixel at a time, exactly as
  // the CUDA kernel does. Returns (ce_map, ocr_map, grad_logits).
  m.def(
      "_pixelwise_seg_ocr(Tensor logits, Tensor? target, Tensor tags, Tensor? prior, "
      "Tensor? grad_ce, Tensor grad_ocr, float margin, float threshold, int group_split, "
      "int pixels, int ignore_index) -> (Tensor, Tensor, Tensor)");
  // Test hook (CPU only): runs ocr_thread.h's thread_objective exactly as the CUDA kernel of
  // seg_ocr_objective does (its warps, pixels per lane and per-warp OC-target split).
  m.def(
      "_pixelwise_seg_objective(Tensor logits, Tensor target, Tensor tags, Tensor? prior, "
      "Tensor? ce_weight, Tensor coef, float margin, float threshold, int group_split, "
      "int pixels, int ignore_index) -> (Tensor, Tensor, Tensor)");
  // Test hook (CPU only): runs ocr_resize_pixel.h's per-thread functions one thread at a time,
  // exactly as the CUDA fused-upsampling kernels do. grad_ce / grad_ocr are [B, *size].
  m.def(
      "_pixelwise_seg_ocr_resized(Tensor logits, Tensor? target, Tensor tags, Tensor? prior, "
      "Tensor? grad_ce, Tensor grad_ocr, int[] size, bool align_corners, float margin, "
      "float threshold, int group_split, int pixels, int ignore_index) -> (Tensor, Tensor, Tensor)");

  // ---- W-OoD (docs/semantics.md §2) ----------------------------------------------------------
  // x [N, D], centroids [K, D] (same dtype) -> [N, K] Euclidean distances in fp32 (fp64 for fp64).
  m.def("wood_distances(Tensor x, Tensor centroids) -> Tensor");
  // The backward of wood_distances for either input: out[i, :] = sum_j g_ij (a_i - b_j) with
  // g_ij = gout * w[i, j] / dist[i, j] (0 where dist = 0); w and dist [NA, J] of any strides
  // (transposed views included); gout a 0-dim tensor on a's device. Returns a's dtype.
  m.def("wood_weighted_diff(Tensor a, Tensor b, Tensor w, Tensor dist, Tensor gout) -> Tensor");
  // The whole W-OoD distance loss (CPU): (0-dim loss, w = dL/dd [B, C + K], d [B, C + K]), fp32
  // (fp64 for fp64); labels [B, C] of any dtype. The backward takes gout (0-dim, on the CPU) and
  // the saved w and d: (grad features, grad class centroids, grad OoD centroids), the last two
  // [0, D] unless centroid_grads.
  m.def(
      "wood_loss(Tensor features, Tensor labels, Tensor class_centroids, Tensor ood_centroids, "
      "float topk) -> (Tensor, Tensor, Tensor)");
  m.def(
      "wood_loss_backward(Tensor gout, Tensor features, Tensor class_centroids, "
      "Tensor ood_centroids, Tensor w, Tensor d, bool centroid_grads) -> (Tensor, Tensor, Tensor)");
  // K-means assignment: (argmin_k |x_n - c_k| as int64 [N], that squared distance [N]).
  m.def("wood_assign(Tensor x, Tensor centroids) -> (Tensor, Tensor)");
  // One CPU K-means step on fp32/fp16/bf16 points (fp32 math): the assignment through a GEMM on
  // data centred by mu [D] (fp32), exact by a guard (csrc/cpu/wood_kmeans.cpp), then, when
  // with_sums, the per-cluster sums [K, D] and counts [K] (fp32, row-order sums). prev_idx [N],
  // prev_bounds [N, 2] (a previous step's) and moved [K] (fp64 distance each centroid moved since)
  // let it skip the points that provably keep their centroid. Returns (assignments int64 [N],
  // squared distance [N] -- for a skipped point an upper bound on it unless a cluster came out
  // empty --, sums, counts, bounds [N, 2] fp64); sums and counts are empty without with_sums.
  m.def(
      "wood_kmeans_step(Tensor x, Tensor centroids, Tensor mu, bool with_sums, Tensor? prev_idx=None, "
      "Tensor? prev_bounds=None, Tensor? moved=None) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
}
