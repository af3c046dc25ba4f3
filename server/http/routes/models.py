"""``/v1/models``: trained models (registered when a job's result names a model file), to
reuse by id in later jobs (``model_id``) or download."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Response
from fastapi.responses import FileResponse

from boltzgen.schemas import ModelInfo, ModelPage
from server.http.convert import model_info
from server.http.deps import SettingsDep, StoreDep, Who
from server.http.files import IfRangeHeader, RangeHeader, file_response, file_responses
from server.http.pagination import Cursor, Limit, decode_cursor, encode_cursor
from server.http.problems import not_found, problem_responses
from server.http.routes import V1

MODEL_MEDIA_TYPE = "application/octet-stream"  # a torch checkpoint (model.pt)

router = APIRouter(prefix=V1, tags=["models"])


@router.get("/models", response_model=ModelPage, responses=problem_responses(422))
def list_models(
    store: StoreDep,
    who: Who,
    settings: SettingsDep,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> ModelPage:
    limit = min(limit, settings.page_size_max)
    items, nxt = store.list_models(who.scope, decode_cursor(cursor), limit)
    return ModelPage(items=[model_info(m) for m in items], next_cursor=encode_cursor(nxt))


@router.get("/models/{model_id}", response_model=ModelInfo, responses=problem_responses(404))
def get_model(model_id: str, store: StoreDep, who: Who) -> ModelInfo:
    m = store.get_model(model_id, who.scope)
    if m is None:
        raise not_found("model", model_id)
    return model_info(m)


@router.get(
    "/models/{model_id}/content",
    response_class=FileResponse,
    responses={**file_responses(MODEL_MEDIA_TYPE), **problem_responses(404, 410, 416)},
)
def download_model(
    model_id: str,
    store: StoreDep,
    who: Who,
    range_header: RangeHeader = None,
    if_range: IfRangeHeader = None,
) -> Response:
    m = store.get_model(model_id, who.scope)
    if m is None:
        raise not_found("model", model_id)
    name = Path(m["path"]).name
    return file_response(m["path"], MODEL_MEDIA_TYPE, name, range_header, if_range)


@router.delete("/models/{model_id}", status_code=204, responses=problem_responses(404))
def delete_model(model_id: str, store: StoreDep, who: Who) -> Response:
    path = store.delete_model(model_id, who.scope)
    if path is None:
        raise not_found("model", model_id)
    Path(path).unlink(missing_ok=True)
    return Response(status_code=204)
