"""The ``sdrindex`` command: figure and fetch-mnist, run as users run them."""

from __future__ import annotations

import functools
import http.server
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdrindex.cli import main
from sdrindex.sp import SpatialPooler

REPO_MNIST = Path(__file__).resolve().parent.parent / "data" / "mnist"


def test_figure_learns_saves_and_reloads(tmp_path, capsys):
    out = tmp_path / "fig.png"
    sp_path = tmp_path / "sp.npz"
    code = main(
        [
            "figure",
            "--out",
            str(out),
            "--config",
            "forum-local",
            "--limit",
            "300",
            "--n",
            "4",
            "--save-sp",
            str(sp_path),
        ]
    )
    assert code == 0
    img = Image.open(out)
    assert img.format == "PNG" and img.width > 300 and img.height > 300
    # Not a blank canvas: the digits and grids put dark pixels on it.
    pixels = np.asarray(img.convert("L"))
    assert (pixels < 100).mean() > 0.01
    sp = SpatialPooler.load(sp_path)
    assert sp.n_columns == 900 and sp.iteration_learn_num_ == 300
    assert "sparsity" in capsys.readouterr().out

    out2 = tmp_path / "fig2.png"
    assert main(["figure", "--out", str(out2), "--load-sp", str(sp_path), "--n", "3"]) == 0
    assert out2.stat().st_size > 0


def test_figure_config_file_with_unknown_key_is_an_error(tmp_path, capsys):
    cfg = tmp_path / "sp.toml"
    cfg.write_text("inputDimensions = [28, 28]\ncolumnDimensions = [10, 10]\nbogusKey = 3\n")
    code = main(["figure", "--out", str(tmp_path / "x.png"), "--config", str(cfg)])
    assert code == 2
    err = capsys.readouterr().err
    assert "bogusKey" in err and "sdrindex: error:" in err
    assert not (tmp_path / "x.png").exists()


def test_figure_config_json_in_snake_case(tmp_path):
    cfg = tmp_path / "sp.json"
    cfg.write_text(
        '{"input_dimensions": [28, 28], "column_dimensions": [12, 12], "potential_radius": 4,'
        ' "global_inhibition": true, "num_active_columns_per_inh_area": 5, "seed": 3}'
    )
    assert (
        main(
            [
                "figure",
                "--out",
                str(tmp_path / "f.png"),
                "--config",
                str(cfg),
                "--limit",
                "100",
                "--n",
                "2",
                "--save-sp",
                str(tmp_path / "sp.npz"),
            ]
        )
        == 0
    )
    sp = SpatialPooler.load(tmp_path / "sp.npz")
    assert sp.column_dimensions == (12, 12) and sp.num_active_columns_per_inh_area == 5


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def mirror():
    handler = functools.partial(_Quiet, directory=str(REPO_MNIST))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fetch_mnist_command(tmp_path, mirror, capsys):
    dead = f"http://127.0.0.1:{_closed_port()}/"
    dest = tmp_path / "mnist"
    assert main(["fetch-mnist", "--dir", str(dest), "--mirror", dead, "--mirror", mirror]) == 0
    names = sorted(p.name for p in dest.iterdir())
    assert names == sorted(p.name for p in REPO_MNIST.glob("*.gz"))
    assert "SDRINDEX_MNIST_DIR" in capsys.readouterr().out


def test_fetch_mnist_command_all_mirrors_dead(tmp_path, capsys):
    dead = f"http://127.0.0.1:{_closed_port()}/"
    assert main(["fetch-mnist", "--dir", str(tmp_path / "m"), "--mirror", dead]) == 3  # data
    assert "sdrindex: error:" in capsys.readouterr().err
    assert not any((tmp_path / "m").glob("*")) if (tmp_path / "m").exists() else True


def test_console_script_help():
    res = subprocess.run(
        [sys.executable, "-m", "sdrindex.cli", "--help"], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0
    assert "figure" in res.stdout and "fetch-mnist" in res.stdout


def test_add_labels_must_match_whether_the_bundle_has_labels():
    from types import SimpleNamespace

    from sdrindex._cli_sharded import added_labels
    from sdrindex.errors import ParameterError

    labelled = SimpleNamespace(table=SimpleNamespace(labels=np.zeros(3, np.int64)))
    unlabelled = SimpleNamespace(table=SimpleNamespace(labels=None))
    assert added_labels(labelled, 7, 2).tolist() == [7, 7]
    assert added_labels(unlabelled, None, 2) is None
    with pytest.raises(ParameterError, match="pass --label"):
        added_labels(labelled, None, 2)
    with pytest.raises(ParameterError, match="without --label"):
        added_labels(unlabelled, 4, 2)
