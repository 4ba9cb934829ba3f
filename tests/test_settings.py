"""``SDRINDEX_*`` settings: the API key from a file (a Docker secret) beside the variable."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("fastapi", reason="the service extras are not installed: pip install -e .[dev]")

from pydantic import ValidationError  # noqa: E402

from sdr_service import Settings  # noqa: E402


@pytest.fixture(autouse=True)
def no_key_in_env(monkeypatch):
    """Settings read the environment: no key may leak in from the one running the tests."""
    for name in list(os.environ):
        if name.startswith("SDRINDEX_"):
            monkeypatch.delenv(name)


def test_key_file_read_without_surrounding_whitespace(tmp_path, monkeypatch):
    secret = tmp_path / "sdrindex_api_key"
    secret.write_text("  s3cret-key\n")  # `echo key > file` leaves a newline
    monkeypatch.setenv("SDRINDEX_API_KEY_FILE", str(secret))
    s = Settings()
    assert s.api_key is not None and s.api_key.get_secret_value() == "s3cret-key"
    assert s.writes_enabled
    assert "s3cret" not in repr(s)  # a SecretStr: never printed


def test_key_from_variable_still_works_and_empty_variable_beside_a_file_is_unset(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("SDRINDEX_API_KEY", "from-env")
    assert Settings().api_key.get_secret_value() == "from-env"
    secret = tmp_path / "key"
    secret.write_text("from-file")
    # compose files often pass SDRINDEX_API_KEY=${SDRINDEX_API_KEY:-}: empty means unset
    monkeypatch.setenv("SDRINDEX_API_KEY", "")
    monkeypatch.setenv("SDRINDEX_API_KEY_FILE", str(secret))
    assert Settings().api_key.get_secret_value() == "from-file"


def test_no_key_at_all_disables_writes():
    assert Settings().api_key is None and not Settings().writes_enabled


def test_key_file_beside_key_variable_refused(tmp_path, monkeypatch):
    secret = tmp_path / "key"
    secret.write_text("from-file")
    monkeypatch.setenv("SDRINDEX_API_KEY", "from-env")
    monkeypatch.setenv("SDRINDEX_API_KEY_FILE", str(secret))
    with pytest.raises(
        ValidationError, match="both SDRINDEX_API_KEY and SDRINDEX_API_KEY_FILE"
    ) as info:
        Settings()
    assert "from-env" not in str(info.value)  # the log gets the error: never the key


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing", "cannot read the key.*No such file"),
        (lambda d: d, "cannot read the key.*directory"),
        (lambda d: (d / "k").write_text("  \n\n") and d / "k", "the file is empty"),
        (lambda d: (d / "k").write_bytes(b"\xff\xfe\x00") and d / "k", "cannot read the key"),
    ],
    ids=["missing", "a-folder", "empty", "not-text"],
)
def test_unusable_key_file_refused_with_the_reason(tmp_path, monkeypatch, make, message):
    path = make(tmp_path)
    monkeypatch.setenv("SDRINDEX_API_KEY_FILE", str(path))
    with pytest.raises(ValidationError, match=message) as info:
        Settings()
    assert "SDRINDEX_API_KEY_FILE" in str(info.value)


def test_key_file_enables_writes_in_the_app(tmp_path, monkeypatch):
    from sdr_service import create_app
    from sdr_service.routes.items import authorise

    secret = tmp_path / "key"
    secret.write_text("file-key\n")
    monkeypatch.setenv("SDRINDEX_API_KEY_FILE", str(secret))
    monkeypatch.setenv("SDRINDEX_BUNDLE", str(tmp_path / "no-bundle"))
    app = create_app()
    settings = app.state.settings
    authorise(settings, "Bearer file-key")  # accepted: no exception
    with pytest.raises(Exception, match="wrong key"):
        authorise(settings, "Bearer file-key\n-other")
