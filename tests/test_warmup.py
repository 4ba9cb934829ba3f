"""The build's warm-up process: it leaves every kernel of the later stages in numba's cache."""

import json
import subprocess
import sys
import textwrap

from helpers import SMALL_SP
from sdrindex.sp import SpatialPooler
from sdrindex.warmup import WarmUp

# a fresh process that runs the warm-up's stages and prints the sdrindex functions numba
# compiled (rather than loaded from its cache) meanwhile
_COUNT_COMPILES = textwrap.dedent(
    """
    import json, sys
    from numba.core import event

    compiled = set()

    class Listener(event.Listener):
        def on_start(self, ev):
            pass

        def on_end(self, ev):
            fn = ev.data["dispatcher"].py_func
            if fn.__module__.startswith("sdrindex"):
                compiled.add(f"{fn.__module__}.{fn.__qualname__}")

    event.register("numba:compile", Listener())
    from sdrindex.warmup import main
    main([sys.argv[1]])
    print(json.dumps(sorted(compiled)))
    """
)


def test_after_the_warm_up_its_stages_compile_nothing(tmp_path):
    params = SpatialPooler.from_nupic_params(dict(SMALL_SP)).get_params()
    warm = WarmUp(params, "nndescent", None, ("calibration", "ridge", "logistic"))
    assert warm.wait(timeout=600) == 0
    spec = json.dumps(
        {
            "sp": {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()},
            "backend": "nndescent",
            "index_params": {},
            "decoders": ["calibration", "ridge", "logistic"],
        }
    )
    out = subprocess.run(
        [sys.executable, "-c", _COUNT_COMPILES, spec],
        capture_output=True, text=True, timeout=600, check=True,
    )  # fmt: skip
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_close_stops_a_running_warm_up():
    params = SpatialPooler.from_nupic_params(dict(SMALL_SP)).get_params()
    warm = WarmUp(params, "nndescent", None, ())
    code = warm.close()
    assert code is not None and not warm.running
