// Every op schema of the ocr_kernels extension, defined once. Kernels are registered per dispatch
// key in csrc/cpu/*.cpp (CPU) and csrc/cuda/*_binding.cpp (CUDA); fake (meta) and autograd
// registrations live in Python (ocr_kernels/{ocr,seg,wood}/csrc_ops.py), so torch.compile and
// opcheck work.
#include <torch/library.h>

TORCH_LIBRARY(ocr_kernels, m) {
  // ---- OCR and the segmentation objective (docs/semantics.md §1, §1b) --------------------------
  // group_split / pixels are the integer codes of ocr_kernels/_options.py. Maps are [B, *spatial]
  // in fp32 (fp64 for fp64 logits).
  m.def(
      "ocr_loss_map(Tensor logits, Tensor tags, Tensor? prior, float margin, float threshold, "
      "int group_split, int pixels) -> Tensor");
  // grad_map may have any strides (a stride-0 expanded gradient of "mean"/"sum" included);
  // loss_map is the forward's output: σ(s) = 1 − exp(−L) is recovered from it.
  m.def(
      "ocr_loss_map_backward(Tensor grad_map, Tensor logits, Tensor tags, Tensor? prior, "
      "Tensor loss_map, float margin, float threshold, int group_split, int pixels) -> Tensor");
  // Fused segmentation objective: (ce_map, ocr_map) from one read of the logits.
  m.def(
      "seg_ocr_loss_maps(Tensor logits, Tensor target, Tensor tags, Tensor? prior, float margin, "
      "float threshold, int group_split, int pixels, int ignore_index) -> (Tensor, Tensor)");
  m.def(
      "seg_ocr_loss_maps_backward(Tensor grad_ce, Tensor grad_ocr, Tensor logits, Tensor target, "
      "Tensor tags, Tensor? prior, Tensor ocr_map, float margin, float threshold, int group_split, "
      "int pixels, int ignore_index) -> Tensor");
  // The same with the bilinear upsampling of the logits fused in (CPU only for now): logits
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

  // ---- W-OoD (docs/semantics.md §2) ----------------------------------------------------------
  // x [N, D], centroids [K, D] (same dtype) -> [N, K] Euclidean distances in fp32 (fp64 for fp64).
  m.def("wood_distances(Tensor x, Tensor centroids) -> Tensor");
  // The backward of wood_distances for either input: out[i, :] = sum_j g_ij (a_i - b_j) with
  // g_ij = gout * w[i, j] / dist[i, j] (0 where dist = 0); w and dist [NA, J] of any strides
  // (transposed views included); gout a 0-dim tensor on a's device. Returns a's dtype.
  m.def("wood_weighted_diff(Tensor a, Tensor b, Tensor w, Tensor dist, Tensor gout) -> Tensor");
  // K-means assignment: (argmin_k |x_n - c_k| as int64 [N], that squared distance [N]).
  m.def("wood_assign(Tensor x, Tensor centroids) -> (Tensor, Tensor)");
}
