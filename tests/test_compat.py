"""MXNet 1.9.1 and GluonCV 0.10.5 on this interpreter and numpy (gluonft.compat), beside PyTorch,
and the CUDA build's libraries from NVIDIA's wheels (gluonft.cuda)."""
import ast
import importlib.util
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import cv2
import mxnet as mx
import numpy as np
import pytest

from gluonft import compat

ROOT = Path(__file__).resolve().parents[1]


def _fresh_python(code: str, *, python: str = sys.executable, timeout: int = 600,
                  **env) -> subprocess.CompletedProcess:
    """``code`` run in a new process of ``python`` (this interpreter by default), from the
    project folder, with ``env`` added to this process's environment."""
    return subprocess.run([python, "-c", code], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, **env})


def _numpy_names_used(package: str):
    """{name: first file} of every ``numpy.<name>`` a package's sources read (AST, by alias)."""
    root = Path(importlib.util.find_spec(package).origin).parent
    used = {}
    for path in sorted(root.rglob("*.py")):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # old sources' invalid escapes
                tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        except SyntaxError:
            continue
        aliases = {alias.asname or "numpy" for node in ast.walk(tree)
                   if isinstance(node, ast.Import) for alias in node.names
                   if alias.name == "numpy"}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases):
                used.setdefault(node.attr, str(path.relative_to(root.parent)))
            elif isinstance(node, ast.ImportFrom) and node.module == "numpy" and not node.level:
                for alias in node.names:
                    used.setdefault(alias.name, str(path.relative_to(root.parent)))
    return used


@pytest.mark.parametrize("package", ["mxnet", "gluoncv"])
def test_every_numpy_name_mxnet_and_gluoncv_read_exists(package):
    """The loud failure the day a numpy release removes another name MXNet or GluonCV reads:
    add a `compat.NUMPY_SHIMS` entry (what the name was, the release that removed it)."""
    used = _numpy_names_used(package)
    assert len(used) > 50  # the scan found numpy's names (mxnet reads ~240, gluoncv ~100)
    missing = {name: where for name, where in used.items() if not compat.numpy_has(np, name)}
    assert not missing, (f"numpy {np.__version__} lacks names {package} reads (name: first "
                         f"file): {missing}; add them to gluonft.compat.NUMPY_SHIMS")


def test_the_shims_replace_nothing_numpy_has():
    """In a fresh Python: every shim name numpy had before gluonft loaded is numpy's own
    object after; those it lacked are exactly what apply reports (none on numpy 1.23)."""
    # gluonft.compat cannot be imported without the package (which applies the shims), so the
    # fresh Python records numpy's names first, by the same getattr rule, then imports gluonft
    names = [shim.name for shim in compat.NUMPY_SHIMS]
    code = ("import warnings, numpy as np\n"
            f"names = {names!r}\n"
            "def has(n):\n"
            "    with warnings.catch_warnings():\n"
            "        warnings.simplefilter('ignore')\n"
            "        try: getattr(np, n)\n"
            "        except AttributeError: return False\n"
            "    return True\n"
            # numpy 1.2x answers some removed names from its module __getattr__ (a new stub
            # each time): compare what the module itself holds, which apply would have to set
            "missing = object()\n"
            "before = {n: vars(np).get(n, missing) for n in names if has(n)}\n"
            "import gluonft\n"
            "changed = [n for n, v in before.items() if vars(np).get(n, missing) is not v]\n"
            "added = sorted(n for n in names if n not in before)\n"
            "print(changed, added == sorted(gluonft.compat.APPLIED['numpy']), added)\n")
    out = _fresh_python(code)
    assert out.returncode == 0, out.stderr
    changed, agrees, _ = out.stdout.strip().splitlines()[-1].split(" ", 2)
    assert changed == "[]" and agrees == "True", out.stdout
    if np.lib.NumpyVersion(np.__version__) < "1.24.0":
        assert compat.APPLIED["numpy"] == []  # nothing changes on numpy 1.23


def test_the_shims_compute_what_the_removed_names_computed():
    assert np.PZERO == 0.0 and str(np.NZERO) == "-0.0" and np.PINF == np.inf == -np.NINF
    assert np.isnan(np.NAN) and np.isnan(np.NaN) and np.Inf == np.inf
    assert np.alltrue([True, True]) and not np.alltrue([True, False])
    assert np.sometrue([False, True]) and np.product([2, 3, 4]) == 24
    assert np.round_(2.567, 2) == 2.57
    a = np.array([[3, 1], [1, 2], [2, 0]])
    np.testing.assert_array_equal(np.msort(a), np.sort(a, axis=0))
    np.testing.assert_array_equal(np.in1d([[1, 5], [3, 2]], [2, 3]), [False, False, True, True])
    np.testing.assert_array_equal(np.in1d([1, 5, 3], [3], invert=True), [True, True, False])
    assert np.trapz([1.0, 2.0, 3.0], dx=0.5) == pytest.approx(2.0)
    assert np.compat.basestring is str or np.compat.basestring.__name__ == "str"
    assert np.bool(1) == True and np.int(2.7) == 2 and np.float("1.5") == 1.5  # noqa: E712
    with pytest.raises(RuntimeError, match="numpy_financial"):
        np.npv(0.1, [1, 2])


def test_mxnet_numpy_fallbacks_that_read_removed_names_work():
    """MXNet's numpy front end reads the removed names at import and call time."""
    x = mx.np.array([1.0, 2.0, 3.0])
    assert float(mx.np.fallback.trapz(x.asnumpy())) == 4.0
    assert mx.numpy.PINF == float("inf") and mx.numpy.NZERO == 0.0
    padded = mx.nd.pad(mx.nd.ones((1, 1, 2, 2)), mode="constant",
                       pad_width=(0, 0, 0, 0, 1, 1, 1, 1))
    assert padded.shape == (1, 1, 4, 4) and padded.sum().asscalar() == 4.0


def test_recordio_packs_a_real_photo_and_reads_it_back(shared, tmp_path):
    photo = next((shared / "data" / "dogcat" / "cat").glob("*.jp*g"))
    image = cv2.imread(str(photo))
    header = mx.recordio.IRHeader(0, [1.0, 2.0], 7, 0)
    packed = mx.recordio.pack_img(header, image, quality=95, img_fmt=".jpg")
    read_header, decoded = mx.recordio.unpack_img(packed)
    assert read_header.id == 7 and list(read_header.label) == [1.0, 2.0]
    assert decoded.shape == image.shape
    # JPEG at quality 95 of an already-JPEG photo: a mean error of a grey level or two
    assert np.abs(decoded.astype(float) - image).mean() < 3.0


def test_gluoncv_loads_its_mxnet_models_whatever_torch_is_installed():
    import gluoncv
    assert gluoncv._found_mxnet and hasattr(gluoncv, "model_zoo")
    net = gluoncv.model_zoo.get_model("cifar_resnet20_v1", classes=10, pretrained=False)
    net.initialize()
    assert net(mx.nd.zeros((1, 3, 32, 32))).shape == (1, 10)


def test_versions_below_the_supported_range_are_one_line_errors_and_above_it_warnings():
    with pytest.raises(ImportError, match=r"Python >= 3\.11 .*this is Python 3\.10$"):
        compat.check_versions(python=(3, 10), numpy_version="2.0.0")
    with pytest.raises(ImportError, match=r"numpy >= 1\.23 .*this is numpy 1\.22"):
        compat.check_versions(python=(3, 12), numpy_version="1.22.4")
    with pytest.warns(compat.UntestedVersionWarning, match=r"Python 3\.14 is newer .*\(3\.13\)"):
        said = compat.check_versions(python=(3, 14), numpy_version="2.0.0")
    assert len(said) == 1
    with pytest.warns(compat.UntestedVersionWarning, match=r"numpy 2\.9 is newer"):
        compat.check_versions(python=(3, 12), numpy_version="2.9.0rc1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert compat.check_versions(python=(3, 11), numpy_version="1.23.5") == []
        assert compat.check_versions() == []  # what CI runs is inside the tested range


@pytest.mark.parametrize("first", ["mxnet", "gluoncv"])
def test_mxnet_or_gluoncv_imported_before_gluonft_load_through_the_startup_hook(first):
    """A program that imports mxnet (or gluoncv) first: the hook installed with gluonft runs
    gluonft.compat before MXNet loads, and a later `import gluonft` shares its state."""
    code = (f"import {first}, sys\n"
            "import mxnet as mx, gluonft\n"
            "print(mx.nd.ones((2, 3)).sum().asscalar(),"
            " gluonft.compat is sys.modules['gluonft.compat'],"
            " 'numpy' in gluonft.compat.APPLIED)\n")
    out = _fresh_python(code)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[-3:] == ["6.0", "True", "True"]
    if compat.APPLIED["numpy"]:  # here MXNet could not load at all without the hook
        off = _fresh_python(code, GLUONFT_NO_HOOK="1")
        assert off.returncode != 0 and "numpy" in off.stderr.lower()


@pytest.mark.parametrize("first", ["gluonft", "mxnet", "sklearn.base, scipy.stats"])
def test_mxnets_optional_imports_load_only_when_used(first):
    """scikit-learn, scipy.stats and onnx (all installed here) are not loaded by importing
    MXNet: scipy.stats and onnx load when MXNet's code uses them, scikit-learn imports as
    usual afterwards, and a program that imported them first keeps them as they are."""
    missing = [m for m in ("sklearn", "scipy", "onnx") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed")
    code = (f"import {first}\n"
            "import sys, gluonft, mxnet as mx\n"
            "real = lambda name: type(sys.modules.get(name)) is type(sys)\n"
            "print([real(m) for m in ('sklearn.base', 'scipy.stats', 'onnx')],"
            " mx.model.BASE_ESTIMATOR.__name__)\n"
            # used by MXNet: a chi-square test of its own, an ONNX dtype table
            "print(round(float(mx.test_utils.ss.chisquare([1, 2], [1.5, 1.5])[0]), 4),"
            " gluonft.compat.onnx_for_mxnet().mapping.NP_TYPE_TO_TENSOR_TYPE[__import__("
            "'numpy').dtype('float32')])\n"
            "import onnx.defs, scipy.stats.qmc, onnx\n"  # submodules of the deferred packages
            "assert onnx.__version__ and onnx.defs.onnx_opset_version() >= 13\n"
            "import sklearn.base\n"
            "print(sklearn.base.BaseEstimator.__name__, real('scipy.stats'), real('onnx'))\n")
    out = _fresh_python(code)
    assert out.returncode == 0, out.stderr[-3000:]
    loaded, used, after = out.stdout.strip().splitlines()[-3:]
    if first == "sklearn.base, scipy.stats":
        assert loaded == "[True, True, False] BaseEstimator"
    else:
        assert loaded == "[False, False, False] object"
    assert used == "0.3333 1"  # (1-1.5)^2/1.5 + (2-1.5)^2/1.5; onnx's FLOAT
    assert after == "BaseEstimator True True"


def _torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


@pytest.mark.skipif(not _torch_available(), reason="torch is not installed here "
                    "(`make torch` installs it beside gluonft)")
def test_torch_before_or_after_gluonft_trains_as_without_it(shared):
    """Colab has torch >= 2 preinstalled: GluonCV's own check refuses to load beside it. The
    same head-only fit on real photos, with torch imported before gluonft, after it, or not
    at all, gives the same losses; and torch itself still trains."""
    weights = str(shared / "weights" / "mobilenet0.75-imagenet.params")
    fit = ("import mxnet as mx, json\n"
           "from gluonft.datasets import image_folder\n"
           f"train = image_folder({str(shared / 'data' / 'dogcat')!r}, image_size=96).train\n"
           "net = gluonft.load_backbone('mobilenet0.75', classes=2, seed=0,"
           f" weights={weights!r})\n"
           "gluonft.apply_regime(net, 'head')\n"
           "h = gluonft.fit(net, train, epochs=3, batch_size=8, lr=0.001, image_size=96, seed=0,"
           " progress=False)\n")
    use_torch = ("t = torch.nn.Linear(4, 2); t(torch.ones(3, 4)).sum().backward()\n"
                 "print(json.dumps({'torch': torch.__version__,"
                 " 'grad': t.weight.grad.abs().sum().item()}))\n")
    runs = {}
    for order, head in (("none", "import gluonft\n"), ("before", "import torch, gluonft\n"),
                        ("after", "import gluonft, torch\n")):
        code = head + fit + "print(json.dumps({'loss': h['train_loss']}))\n" \
            + (use_torch if order != "none" else "")
        out = _fresh_python(code)
        assert out.returncode == 0, out.stderr[-3000:]
        lines = [json.loads(line) for line in out.stdout.strip().splitlines()[-2:]
                 if line.startswith("{")]
        runs[order] = {k: v for line in lines for k, v in line.items()}
    for order in ("before", "after"):
        # the same kernels in a fresh process each time; torch may set its own thread pools,
        # so allow float rounding (losses of about 0.7 here)
        assert runs[order]["loss"] == pytest.approx(runs["none"]["loss"], rel=1e-5)
        assert int(runs[order]["torch"].split(".")[0]) >= 2 and runs[order]["grad"] > 0


# -- the CUDA build: a venv with the gpu extra (GLUONFT_GPU_PYTHON; .ci/run makes one) -------

GPU_PYTHON = str(ROOT / os.environ["GLUONFT_GPU_PYTHON"]) if os.environ.get(
    "GLUONFT_GPU_PYTHON") else ""  # relative to the project folder, or absolute


needs_gpu_venv = pytest.mark.skipif(not Path(GPU_PYTHON).is_file(), reason="no venv with the "
                                    "gpu extra: GLUONFT_GPU_PYTHON=.venv-gpu/bin/python after "
                                    "`make install VENV=.venv-gpu EXTRAS=gpu`")


@needs_gpu_venv
def test_every_library_libmxnet_needs_comes_from_the_gpu_extra_but_the_driver():
    """gluonft/cuda.py is loaded on its own (the package cannot load without a driver): the
    paths it computes load with dlopen, and with them ldd finds all of libmxnet.so's CUDA
    libraries; only the driver's libcuda.so.1 is left (and the system's libc, libstdc++...)."""
    code = ("import importlib.util, ctypes, os, json, subprocess\n"
            "spec = importlib.util.spec_from_file_location('cuda',"
            f" {str(ROOT / 'gluonft' / 'cuda.py')!r})\n"
            "cuda = importlib.util.module_from_spec(spec); spec.loader.exec_module(cuda)\n"
            "paths = cuda.library_paths()\n"
            "for p in paths.values(): ctypes.CDLL(p, mode=os.RTLD_GLOBAL)\n"
            "lib = os.path.join(os.path.dirname(importlib.util.find_spec('mxnet').origin),"
            " 'libmxnet.so')\n"
            "dirs = sorted({os.path.dirname(p) for p in paths.values()})\n"
            "ldd = subprocess.run(['ldd', lib], capture_output=True, text=True,"
            " env={'LD_LIBRARY_PATH': ':'.join(dirs)}).stdout\n"
            "print(json.dumps({'build': cuda.mxnet_is_cuda_build(), 'paths': paths,"
            " 'ldd': ldd}))\n")
    out = _fresh_python(code, python=GPU_PYTHON, timeout=300, LD_LIBRARY_PATH="")
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["build"] is True
    assert all(found["paths"].values()), found["paths"]
    rows = dict(line.strip().split(" => ", 1) for line in found["ldd"].splitlines()
                if " => " in line)
    cuda_names = [name for name in rows if name.startswith(("libcu", "libnv", "libnccl"))]
    assert sorted(name for name, where in rows.items() if "not found" in where) == ["libcuda.so.1"]
    wheel_dir = str(Path(found["paths"]["libcudart.so.11.0"]).parents[2])
    assert all(rows[name].startswith(wheel_dir)
               for name in cuda_names if name != "libcuda.so.1"), \
        rows
    assert len(cuda_names) >= 10  # cudart cublas cublasLt cudnn cufft curand cusolver nvrtc ...


@needs_gpu_venv
def test_without_a_driver_the_cuda_build_says_so_in_one_line():
    if Path("/usr/lib/x86_64-linux-gnu/libcuda.so.1").exists():
        pytest.skip("this machine has an NVIDIA driver")
    out = _fresh_python("import gluonft", python=GPU_PYTHON, timeout=300,
                        LD_LIBRARY_PATH="")
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("gluonft.cuda.MissingDriver: ") and "libcuda.so.1" in last \
        and "--no-deps mxnet==1.9.1" in last, out.stderr[-2000:]


def test_mxnets_onnx_exporter_gets_the_dtype_tables_onnx_1_19_removed():
    onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed")
    from onnx import TensorProto
    mapping = compat.onnx_for_mxnet().mapping
    to_tensor, to_np = mapping.NP_TYPE_TO_TENSOR_TYPE, mapping.TENSOR_TYPE_TO_NP_TYPE
    assert to_tensor[np.dtype("float32")] == TensorProto.FLOAT
    assert to_tensor[np.dtype("float16")] == TensorProto.FLOAT16
    assert to_tensor[np.dtype("uint16")] == TensorProto.UINT16  # not BFLOAT16, as onnx 1.18
    assert to_tensor[np.dtype("int64")] == TensorProto.INT64
    assert to_tensor[np.dtype("bool")] == TensorProto.BOOL
    assert to_np[TensorProto.DOUBLE] == np.dtype("float64")
    import sys as _sys
    assert _sys.modules["onnx.mapping"] is onnx.mapping  # `from onnx import mapping` finds it
