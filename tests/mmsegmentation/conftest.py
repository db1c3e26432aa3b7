from mmsegmentation import mmcv_ext_standin

mmcv_ext_standin.install()
