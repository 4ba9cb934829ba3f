"""Request and response models: the OpenAPI schema at /docs and /openapi.json.

Request bodies are parsed by :mod:`sdr_service.inputs` (in worker threads, with readable
reasons for every rejection); these models describe them for the documentation, and the
responses for the clients.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

PIXELS_DOC = "28 rows of 28 integers 0-255 (white ink on black, MNIST-like), used as they are"


class SDRIn(BaseModel):
    active: list[int] = Field(description="active column indices, each in [0, size)")
    size: int = Field(description="number of columns; must equal the bundle's n_columns")


class PixelsQuery(BaseModel):
    pixels: list[list[int]] = Field(description=PIXELS_DOC)


class SDRQuery(BaseModel):
    sdr: SDRIn


class BatchRequest(BaseModel):
    queries: list[PixelsQuery | SDRQuery] = Field(description="1 to 256 queries")


class ItemIn(BaseModel):
    pixels: list[list[int]] = Field(description=PIXELS_DOC)
    label: int | None = Field(None, description="required when the bundle has labels")


class AddItemsRequest(BaseModel):
    items: list[ItemIn]


class ImageUpload(BaseModel):
    model_config = ConfigDict(title="ImageUpload")
    image: bytes = Field(
        json_schema_extra={"format": "binary"},
        description="PNG or JPEG (also GIF, BMP, WebP) of any size and colour mode; "
        "normalised as `sdrindex build` does (cropped, scaled to 20x20, centred by mass)",
    )


class AddItemsUpload(BaseModel):
    image: list[bytes] = Field(
        json_schema_extra={"items": {"type": "string", "format": "binary"}},
        description="one or more image files",
    )
    label: list[int] | None = Field(
        None, description="one label per image, or one label for all (labelled bundles)"
    )


# --------------------------------------------------------------------------- responses


class ErrorResponse(BaseModel):
    status: int
    error: str = Field(description="the HTTP status phrase")
    detail: str = Field(description="what was wrong, readably")


class SDROut(BaseModel):
    active: list[int]
    size: int


class Match(BaseModel):
    id: int
    label: int | None
    overlap: int = Field(description="shared active columns with the query")
    jaccard: float = Field(description="overlap / |query OR stored|")


class ImageOut(BaseModel):
    png_base64: str = Field(description="28x28 greyscale PNG, base64")
    pixels: list[list[int]] = Field(description="the same image, 0-255")


class InputOut(BaseModel):
    pixels: list[list[int]] = Field(description="the query image after normalisation")
    png_base64: str
    binary_png_base64: str = Field(
        description="what the Spatial Pooler sees: pixel >= threshold, or with thermometer "
        "planes the share of a pixel's planes that are on"
    )


class ReconstructResponse(BaseModel):
    k: int
    matches: list[Match]
    predicted_label: int | None
    label_method: str | None = Field(description="knn (vote) or logistic (stored readout)")
    sdr: SDROut
    input: InputOut | None = Field(description="null for SDR queries")
    reconstructions: dict[str, ImageOut]
    timing_ms: dict[str, float] = Field(description="per stage, and total")
    bundle_version: str


class SearchResponse(BaseModel):
    ids: list[int]
    overlaps: list[int]


class BatchResponse(BaseModel):
    results: list[SearchResponse]


class ItemResponse(BaseModel):
    id: int
    label: int | None
    sdr: SDROut
    pixels: list[list[int]]
    image_url: str


class NeighborsResponse(BaseModel):
    id: int
    k: int
    neighbors: list[Match] = Field(description="the item itself left out")


class AddItemsResponse(BaseModel):
    ids: list[int]
    n_items: int
    version: str


class SampleResponse(BaseModel):
    source: str = Field(description="mnist-test, or bundle when MNIST's test set is absent")
    index: int
    label: int | None
    pixels: list[list[int]]


class InfoResponse(BaseModel):
    model_config = ConfigDict(extra="allow")
    bundle: dict[str, Any]
    version: str
    methods: dict[str, dict[str, Any]]
    label_method: str | None
    column_dimensions: list[int]
    limits: dict[str, int]
    writes_enabled: bool


class StatusResponse(BaseModel):
    status: str
    detail: str | None = None
    pid: int | None = Field(None, description="the worker process that answered")
    shards: list[dict[str, Any]] | None = Field(
        None, description="a bundle served on a Ray cluster: each shard, up or down"
    )


#: Models referenced from hand-written request bodies (``openapi_extra``).
BODY_MODELS = (
    PixelsQuery,
    SDRQuery,
    SDRIn,
    BatchRequest,
    ItemIn,
    AddItemsRequest,
    ImageUpload,
    AddItemsUpload,
)


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def query_body() -> dict[str, Any]:
    """The request body of /v1/reconstruct and /v1/search."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": _ref(ImageUpload)},
                "application/json": {"schema": {"oneOf": [_ref(PixelsQuery), _ref(SDRQuery)]}},
                "image/png": {"schema": {"type": "string", "format": "binary"}},
                "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    }


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _ref(model)}},
        }
    }


def add_items_body() -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": _ref(AddItemsUpload)},
                "application/json": {"schema": _ref(AddItemsRequest)},
            },
        }
    }


def body_component_schemas() -> dict[str, Any]:
    """JSON schemas of :data:`BODY_MODELS` for ``components.schemas``."""
    _, top = models_json_schema(
        [(m, "validation") for m in BODY_MODELS], ref_template="#/components/schemas/{model}"
    )
    return top.get("$defs", {})
