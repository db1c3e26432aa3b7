"""A test-only stand-in for ``mmcv._ext``, mmcv's compiled ops, which mmcv-lite does not ship.

mmsegmentation imports ``mmcv.ops`` at module level, and ``mmcv.ops`` looks up its compiled
functions there (``mmcv.utils.ext_loader.load_ext``) when it is imported. The models these tests
train (ResNetV1c, FCNHead, the losses) call none of them: every function of this stand-in raises
if called, so a test that reached a compiled op would fail, never compute something else.
Building the real ops takes tens of minutes on CI's two cores (README, "mmsegmentation").
"""
import sys
import types


class CompiledOpCalled(RuntimeError):
    pass


class _Ext(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)

        def op(*args, **kwargs):
            raise CompiledOpCalled(
                f"mmcv._ext.{name} was called: this test environment has mmcv-lite and a stand-in "
                "for mmcv's compiled ops (tests/mmseg/mmcv_ext_standin.py)"
            )

        op.__name__ = name
        return op


def install() -> bool:
    """Put the stand-in in sys.modules when mmcv is installed without its compiled ops; False
    when the real ops are there (or mmcv is absent)."""
    import importlib.machinery
    import importlib.util

    if importlib.util.find_spec("mmcv") is None or "mmcv._ext" in sys.modules:
        return False
    try:
        import mmcv._ext  # noqa: F401  the full mmcv: use its ops
        return False
    except ImportError:
        ext = _Ext("mmcv._ext")
        # No loader: mmcv's check_ops_exist() (pkgutil.find_loader) still reports no ops.
        ext.__spec__ = importlib.machinery.ModuleSpec("mmcv._ext", None)
        sys.modules["mmcv._ext"] = ext
        return True
