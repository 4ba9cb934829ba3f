"""The build's warm-up process: it leaves every kernel of the later stages and of serving a
bundle in numba's cache, so a new process compiles nothing there."""

import json
import os
import subprocess
import sys
import textwrap

from helpers import build_small_bundle, copy_bundle
from sdrindex.bundle import Bundle
from sdrindex.warmup import WarmUp

# Run in a fresh process: prints every (kernel, signature) that sdrindex's numba kernels hold
# (compiled or loaded from the cache) after the code given as argv[1] ran.
_SIGNATURES = textwrap.dedent(
    """
    import json, sys
    from numba.core.registry import CPUDispatcher

    exec(sys.argv[1])
    seen = set()
    for name, mod in list(sys.modules.items()):
        if not name.startswith("sdrindex") or mod is None:
            continue
        for obj in vars(mod).values():
            if isinstance(obj, CPUDispatcher) and obj.py_func.__module__.startswith("sdrindex"):
                fn = obj.py_func
                for sig in obj.signatures:
                    seen.add(f"{fn.__module__}.{fn.__qualname__}{sig}")
    print(json.dumps(sorted(seen)))
    """
)

# What a server does with a bundle: load, search, reconstruct by every method, label, add.
_SERVE = textwrap.dedent(
    """
    import numpy as np
    from fastapi.testclient import TestClient
    from sdr_service import Settings, create_app
    from sdrindex.bundle import Bundle

    root = sys.argv[2]
    img = np.asarray(Bundle.load(root).table.images[3]).tolist()
    app = create_app(Settings(bundle=root, api_key="k"))
    with TestClient(app, raise_server_exceptions=False) as c:
        while c.get("/readyz").status_code != 200:
            pass
        for path in ("/v1/search?k=5", "/v1/reconstruct?k=5&methods=nearest,knn,"
                     "backprojection,decoder"):
            r = c.post(path, json={"pixels": img})
            assert r.status_code == 200, r.text
        body = {"items": [{"pixels": np.roll(img, 2, axis=1).tolist(), "label": 4}]}
        r = c.post("/v1/items", json=body, headers={"Authorization": "Bearer k"})
        assert r.status_code == 201, r.text
        assert c.post("/v1/search?k=5", json={"pixels": img}).status_code == 200
    """
)


def signatures(code: str, *args: str) -> set[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run(
        [sys.executable, "-c", _SIGNATURES, code, *args],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_serving_a_bundle_uses_only_kernels_the_warm_up_compiled(tmp_path_factory, tmp_path):
    root = build_small_bundle(tmp_path_factory.getbasetemp() / "warmup-small", n=2100,
                              backend="nndescent")  # fmt: skip
    b = Bundle.load(root)
    spec = {
        "sp": {k: list(v) if isinstance(v, tuple) else v for k, v in b.sp.get_params().items()},
        "backend": "nndescent",
        "index_params": {},
        "decoders": ["calibration", "ridge", "logistic"],
    }
    warmed = signatures(f"from sdrindex.warmup import main; main([{json.dumps(spec)!r}])")
    served = signatures(_SERVE, str(copy_bundle(root, tmp_path / "b")))
    assert served, "the server ran no sdrindex kernel"
    assert served <= warmed, sorted(served - warmed)


def test_warm_up_process_ends_by_itself_and_close_stops_one(tmp_path_factory):
    root = build_small_bundle(tmp_path_factory.getbasetemp() / "warmup-small", n=2100,
                              backend="nndescent")  # fmt: skip
    params = Bundle.load(root).sp.get_params()
    assert WarmUp(params, "exact", None, ()).wait(timeout=600) == 0
    running = WarmUp(params, "nndescent", None, ("ridge",))
    assert running.close() is not None and not running.running
