"""The service's configuration: environment variables with the ``SDRINDEX_`` prefix."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Where ``sdrindex serve`` and the service look for (and first build) the bundle.
DEFAULT_BUNDLE = Path("bundles/mnist")


class Settings(BaseSettings):
    """Service settings; every field reads ``SDRINDEX_<NAME>`` from the environment.

    ``SDRINDEX_BUNDLE`` is the bundle directory, ``SDRINDEX_API_KEY`` the key that
    ``POST /v1/items`` requires (``Authorization: Bearer <key>``; unset: writes are disabled)
    or ``SDRINDEX_API_KEY_FILE`` a file holding it (a Docker secret: unlike a variable, it is
    not shown by ``docker inspect``), and the rest are the limits every request is held to.
    """

    # hide_input_in_errors: a validation error would otherwise print every setting it was
    # given, the API key among them, into the log.
    model_config = SettingsConfigDict(
        env_prefix="SDRINDEX_", extra="ignore", hide_input_in_errors=True
    )

    bundle: Path = Field(DEFAULT_BUNDLE, description="bundle directory (its `current` link)")
    api_key: SecretStr | None = Field(
        None, description="Bearer key for POST /v1/items; unset or empty disables writes"
    )
    api_key_file: Path | None = Field(
        None,
        description="file holding the key (e.g. /run/secrets/sdrindex_api_key); its content, "
        "without surrounding whitespace, is the key. Not together with SDRINDEX_API_KEY",
    )
    max_body_bytes: int = Field(2 * 1024 * 1024, ge=1024, description="larger bodies get 413")
    max_k: int = Field(100, ge=1, le=10_000, description="largest k a query may ask for")
    max_batch: int = Field(256, ge=1, le=100_000, description="queries per /v1/search/batch")
    max_add: int = Field(256, ge=1, le=100_000, description="items per POST /v1/items")
    max_image_pixels: int = Field(
        8_388_608,
        ge=784,
        description="uploads with more pixels (width x height) get 413; formats decoded at "
        "full size (all but JPEG) may also hold at most this many bytes once decoded",
    )
    knn_k: int = Field(10, ge=1, le=1000, description="neighbours blended by the knn method")
    label_k: int = Field(5, ge=1, le=1000, description="neighbours voting for predicted_label")
    threads: int = Field(
        2,
        ge=1,
        le=256,
        description="threads per worker for CPU-bound work (2: the best latency tail in the "
        "load test; more threads share one GIL and only interleave)",
    )
    numba_threads: int = Field(
        1,
        ge=1,
        le=256,
        description="numba threads per request thread (workers already use the cores; "
        "more threads only add start-up cost to single queries)",
    )
    switch_interval_ms: float = Field(
        5.0,
        gt=0,
        le=100,
        description="the interpreter's thread switch interval in each worker (sys."
        "setswitchinterval; Python's default 5 ms)",
    )
    max_in_flight: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description="requests a worker holds at once (reading, waiting for a thread or "
        "running), health and metrics aside; more get 503 with Retry-After before their "
        "body is read. Default 16 x threads: a request admitted last waits ~16 handler "
        "times (~40 ms for a reconstruct), and the memory held is bounded by this x "
        "max_body_bytes",
    )
    retry_after_s: int = Field(
        1, ge=0, le=3600, description="the Retry-After (seconds) of an overload 503"
    )
    verify_on_reload: bool = Field(
        False,
        description="verify checksums when a worker reloads a version another worker wrote "
        "(the first load always verifies)",
    )

    retry_backoff_s: float = Field(
        1.0,
        gt=0,
        le=60,
        description="seconds before a failed bundle load is first retried (start-up or a new "
        "version); doubled after each further failure",
    )
    retry_backoff_max_s: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="the longest wait between two attempts to load a failing bundle; the worker "
        "keeps retrying at this pace and never gives up",
    )
    reload_wait_s: float = Field(
        5.0,
        ge=0,
        le=600,
        description="how long a request waits for another request's load of a new version "
        "before it answers from the previous one",
    )

    ray_address: str | None = Field(
        None,
        description="HOST:PORT of a Ray cluster's head: serve a sharded bundle whose shards are "
        "Ray actors there (`sdrindex serve --ray ADDRESS`); unset: the bundle is served here",
    )
    ray_replicas: int = Field(1, ge=1, le=64, description="Ray actors per shard (--replicas)")
    ray_timeout_s: float = Field(
        10.0,
        gt=0,
        le=600,
        description="how long a query waits for a shard's actors before it answers 503 naming "
        "the shard (a killed actor is back in about a second; a lost node may not come back)",
    )
    ray_actor_resources: dict[str, float] = Field(
        default_factory=dict,
        description="custom Ray resources each shard actor asks for, as JSON (e.g. "
        '{"sdrindex_shard_slot": 1}: one shard per node offering one slot)',
    )

    @field_validator("api_key")
    @classmethod
    def _empty_is_none(cls, v: SecretStr | None) -> SecretStr | None:
        return None if v is None or not v.get_secret_value() else v

    @model_validator(mode="after")
    def _key_from_file(self) -> Settings:
        """Read the key from ``api_key_file``; refuse it beside a key given directly."""
        if self.api_key_file is None:
            return self
        path = self.api_key_file
        if self.api_key is not None:
            raise ValueError(
                f"both SDRINDEX_API_KEY and SDRINDEX_API_KEY_FILE ({path}) are set: keep one "
                "(the file, a Docker secret, keeps the key out of `docker inspect`)"
            )
        try:
            key = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ValueError(
                f"SDRINDEX_API_KEY_FILE={path}: cannot read the key ({why}); check that the "
                "file (the secret) exists and that the service's user may read it"
            ) from None
        if not key:
            raise ValueError(
                f"SDRINDEX_API_KEY_FILE={path}: the file is empty; put the key in it, or unset "
                "the variable to disable writes"
            )
        self.api_key = SecretStr(key)
        return self

    @property
    def writes_enabled(self) -> bool:
        return self.api_key is not None

    @property
    def in_flight_limit(self) -> int:
        """``max_in_flight``, else 16 per request thread."""
        return self.max_in_flight or 16 * self.threads
