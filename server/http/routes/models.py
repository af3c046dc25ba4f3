"""``/v1/models``: trained models (registered when a job's result names a model file), to
reuse by id in later jobs (``model_id``) or download."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Response
from fastapi.responses import FileResponse

from boltzgen.schemas import ModelInfo, ModelPage
from server.http.convert import model_info
from server.http.deps import StoreDep, Who
from server.http.files import (
    MODEL_MEDIA_TYPE,
    Ranges,
    file_responses,
    model_file,
)
from server.http.pagination import Paging, read_page
from server.http.problems import found, not_found, problem_responses
from server.http.routes import V1

router = APIRouter(prefix=V1, tags=["models"])


@router.get("/models", response_model=ModelPage, responses=problem_responses(422))
def list_models(store: StoreDep, who: Who, paging: Paging) -> ModelPage:
    page = read_page(store.list_models, who.scope, paging, model_info)
    return ModelPage(items=page.items, next_cursor=page.next_cursor)


@router.get("/models/{model_id}", response_model=ModelInfo, responses=problem_responses(404))
def get_model(model_id: str, store: StoreDep, who: Who) -> ModelInfo:
    return model_info(found(store.get_model(model_id, who.scope), "model", model_id))


@router.get(
    "/models/{model_id}/content",
    response_class=FileResponse,
    responses={**file_responses(MODEL_MEDIA_TYPE), **problem_responses(404, 410, 416)},
)
def download_model(
    model_id: str,
    store: StoreDep,
    who: Who,
    ranges: Ranges,
) -> Response:
    return model_file(store, model_id, who.scope).response(ranges)


@router.delete("/models/{model_id}", status_code=204, responses=problem_responses(404))
def delete_model(model_id: str, store: StoreDep, who: Who) -> Response:
    path = store.delete_model(model_id, who.scope)
    if path is None:
        raise not_found("model", model_id)
    Path(path).unlink(missing_ok=True)
    return Response(status_code=204)
