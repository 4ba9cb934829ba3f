"""Property-based fuzzing of the service's JSON and multipart inputs: never a 5xx.

Also checks that nothing a client sends changes the stored bundle (writes are disabled
here, so every POST /v1/items must be refused).
"""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the service extras are not installed: pip install -e .[dev]")

from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from PIL import Image  # noqa: E402

from helpers import build_small_bundle  # noqa: E402
from sdr_service import Settings, create_app  # noqa: E402

FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
POSTS = ("/v1/reconstruct", "/v1/search", "/v1/search/batch", "/v1/items")


@pytest.fixture(scope="module")
def fuzz_client(tmp_path_factory):
    root = build_small_bundle(tmp_path_factory.getbasetemp() / "service-small", n=1500)
    before = _snapshot(root)
    app = create_app(Settings(bundle=root, api_key="fuzz-key"))
    with TestClient(app, raise_server_exceptions=False) as c:
        deadline = time.monotonic() + 60
        while c.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "not ready"
            time.sleep(0.05)
        yield c
    assert _snapshot(root) == before, "a client changed the stored bundle"


def _snapshot(root):
    cur = (root / "current").readlink()
    files = sorted(
        (p.relative_to(root).as_posix(), p.stat().st_size)
        for p in root.rglob("*")
        if p.is_file() and p.name != ".update.lock"
    )
    return cur, files


def check(r) -> None:
    assert r.status_code < 500, (r.status_code, r.text[:500])
    if r.status_code >= 400:
        body = r.json()
        assert isinstance(body["detail"], str) and body["detail"], body


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=6)
        | st.dictionaries(
            st.sampled_from(["pixels", "sdr", "active", "size", "queries", "items", "label", "x"]),
            children,
            max_size=4,
        )
    ),
    max_leaves=40,
)
ints = st.integers(-300, 7000) | st.sampled_from([0, 255, 6240, 6241, 2**63, -(2**63)])
pixel_rows = st.lists(
    st.lists(ints | st.floats(0, 255) | st.booleans(), min_size=0, max_size=30),
    min_size=0,
    max_size=30,
)
sdr_objs = st.fixed_dictionaries(
    {"active": st.lists(ints, max_size=50) | json_values, "size": ints | json_values}
)
near_valid = st.one_of(
    st.fixed_dictionaries({"pixels": pixel_rows}),
    st.fixed_dictionaries({"pixels": st.just([[0] * 28] * 28)}),
    st.fixed_dictionaries({"sdr": sdr_objs}),
    st.fixed_dictionaries(
        {
            "queries": st.lists(
                st.fixed_dictionaries({"sdr": sdr_objs})
                | st.fixed_dictionaries({"pixels": pixel_rows})
                | json_values,
                max_size=4,
            )
        }
    ),
    st.fixed_dictionaries(
        {
            "items": st.lists(
                st.fixed_dictionaries({"pixels": pixel_rows, "label": ints | json_values}),
                max_size=3,
            )
        }
    ),
)
query_strings = st.fixed_dictionaries(
    {},
    optional={
        "k": st.text(max_size=6) | ints.map(str),
        "methods": st.text(max_size=20)
        | st.lists(
            st.sampled_from(["nearest", "knn", "backprojection", "decoder", "x", ""]), max_size=5
        ).map(",".join),
    },
)


@FUZZ
@given(path=st.sampled_from(POSTS), body=json_values | near_valid, params=query_strings)
def test_json_bodies_never_5xx(fuzz_client, path, body, params):
    data = json.dumps(body).encode()
    check(
        fuzz_client.post(
            path, content=data, params=params, headers={"content-type": "application/json"}
        )
    )


@FUZZ
@given(
    path=st.sampled_from(POSTS),
    raw=st.binary(max_size=400),
    ctype=st.sampled_from(
        [
            "application/json",
            "image/png",
            "image/jpeg",
            "text/plain",
            "",
            "multipart/form-data; boundary=b",
            "multipart/form-data",
            "application/x-www-form-urlencoded",
            "image/",
            "x/y; a=b",
        ]
    ),
)
def test_raw_bodies_never_5xx(fuzz_client, path, raw, ctype):
    headers = {"content-type": ctype} if ctype else {}
    check(fuzz_client.post(path, content=raw, headers=headers))


def _valid_png() -> bytes:
    img = np.zeros((30, 30), np.uint8)
    img[5:25, 12:17] = 255
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    return buf.getvalue()


PNG = _valid_png()


@st.composite
def mutated_images(draw):
    kind = draw(st.sampled_from(["random", "truncated", "flipped", "prefix"]))
    if kind == "random":
        return draw(st.binary(max_size=600))
    if kind == "truncated":
        return PNG[: draw(st.integers(0, len(PNG)))]
    if kind == "prefix":
        return draw(
            st.sampled_from(
                [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM", b"RIFF\0\0\0\0WEBP"]
            )
        ) + draw(st.binary(max_size=300))
    data = bytearray(PNG)
    for _ in range(draw(st.integers(1, 8))):
        i = draw(st.integers(0, len(data) - 1))
        data[i] = draw(st.integers(0, 255))
    return bytes(data)


@FUZZ
@given(
    path=st.sampled_from(POSTS),
    image=mutated_images(),
    name=st.sampled_from(["image", "image", "file", "", "imagé"]),
    filename=st.text(max_size=10),
    ctype=st.sampled_from(["image/png", "image/jpeg", "application/octet-stream", "text/plain"]),
    label=st.none() | st.text(max_size=5),
    params=query_strings,
    auth=st.booleans(),
)
def test_multipart_never_5xx(fuzz_client, path, image, name, filename, ctype, label, params, auth):
    data = {"label": label} if label is not None else None
    # A wrong key: POST /v1/items must refuse to write whatever the body.
    headers = {"Authorization": "Bearer not-the-key"} if auth else {}
    r = fuzz_client.post(
        path,
        files={name or "x": (filename or "f", image, ctype)},
        data=data,
        params=params,
        headers=headers,
    )
    check(r)
    if path == "/v1/items":
        assert r.status_code == 401


@FUZZ
@given(
    raw=st.binary(max_size=300),
    boundary=st.text(
        st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=';"'),
        min_size=1,
        max_size=12,
    ),
)
def test_handmade_multipart_never_5xx(fuzz_client, raw, boundary):
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a"\r\n\r\n'
        ).encode()
        + raw
        + f"\r\n--{boundary}--\r\n".encode()
    )
    for path in ("/v1/reconstruct", "/v1/search"):
        r = fuzz_client.post(
            path,
            content=body,
            headers={"content-type": f"multipart/form-data; boundary={boundary}"},
        )
        check(r)


@FUZZ
@given(item=st.text(max_size=12), k=st.text(max_size=6), scale=st.text(max_size=4))
def test_item_paths_never_5xx(fuzz_client, item, k, scale):
    from urllib.parse import quote

    item = quote(item, safe="")
    for url in (f"/v1/items/{item}", f"/v1/items/{item}/neighbors", f"/v1/items/{item}/image.png"):
        check(fuzz_client.get(url, params={"k": k, "scale": scale}))


# --------------------------------------------------------------------------- parser limits

KEYED = {"Authorization": "Bearer fuzz-key"}
PIXELS = [[0] * 28 for _ in range(28)]


def test_json_parser_limits_are_400(fuzz_client):
    """Integers past Python's int-string limit and deep nesting: 400 with the reason."""
    huge = b"1" * 5000  # more digits than sys.get_int_max_str_digits() (4,300)
    bodies = [
        ("digits", b'{"sdr": {"active": [' + huge + b'], "size": 6241}}'),
        ("digits", b'{"items": [{"pixels": [], "label": ' + huge + b"}]}"),
        ("nested", b"[" * 100_000 + b"]" * 100_000),
    ]
    for path in POSTS:
        for words, body in bodies:
            r = fuzz_client.post(
                path, content=body, headers={"content-type": "application/json", **KEYED}
            )
            check(r)
            assert r.status_code == 400 and words in r.json()["detail"], r.text


@pytest.mark.parametrize(
    "label",
    [2**63, -(2**63) - 1, 2**62, 10**4000, -(2**64)],
    ids=["2**63", "-2**63-1", "2**62", "10**4000", "-2**64"],
)
def test_huge_labels_are_422_before_numpy(fuzz_client, label):
    """A label numpy cannot hold (authenticated write): 422, and nothing written."""
    r = fuzz_client.post(
        "/v1/items", json={"items": [{"pixels": PIXELS, "label": label}]}, headers=KEYED
    )
    check(r)
    assert r.status_code == 422 and "label" in r.json()["detail"], r.text
    files = {"image": ("d.png", PNG, "image/png")}
    r = fuzz_client.post("/v1/items", files=files, data={"label": str(label)}, headers=KEYED)
    check(r)
    assert r.status_code == 422 and "label" in r.json()["detail"], r.text


@FUZZ
@given(label=st.integers(min_value=2**62) | st.integers(max_value=-(2**62)))
def test_out_of_range_labels_never_5xx(fuzz_client, label):
    r = fuzz_client.post(
        "/v1/items", json={"items": [{"pixels": PIXELS, "label": label}]}, headers=KEYED
    )
    check(r)
    assert r.status_code == 422


@pytest.mark.parametrize(
    "item", [2**63, 2**64, -(2**63) - 1, 10**30], ids=["2**63", "2**64", "-2**63-1", "10**30"]
)
def test_huge_item_ids_are_404(fuzz_client, item):
    for url in (f"/v1/items/{item}", f"/v1/items/{item}/neighbors", f"/v1/items/{item}/image.png"):
        r = fuzz_client.get(url)
        check(r)
        assert r.status_code == 404 and "no item" in r.json()["detail"], r.text


def test_sdr_longer_than_the_columns_is_422(fuzz_client):
    r = fuzz_client.post("/v1/search", json={"sdr": {"active": [0] * 7000, "size": 6241}})
    check(r)
    assert r.status_code == 422 and "more than the 6241 columns" in r.json()["detail"]
