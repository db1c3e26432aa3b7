import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import mmcv_ext_standin  # noqa: E402

mmcv_ext_standin.install()
