"""``GET /v1/models`` and ``GET /v1/models/{id}``: the one model this server holds."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from mkdeploy.serve.auth import require_api_key
from mkdeploy.serve.openai_errors import OpenAIError
from mkdeploy.serve.schemas import ModelCard, ModelList

router = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)])


def _card(request: Request) -> ModelCard:
    return ModelCard(id=request.app.state.config.served_id, created=request.app.state.created)


@router.get("/models", response_model=ModelList)
def list_models(request: Request) -> ModelList:
    return ModelList(data=[_card(request)])


@router.get("/models/{model_id}", response_model=ModelCard)
def get_model(model_id: str, request: Request) -> ModelCard:
    card = _card(request)
    if model_id != card.id:
        raise OpenAIError(
            404,
            f"model {model_id!r} is not served here; this server has {card.id!r}",
            "not_found",
            code="model_not_found",
            param="model",
        )
    return card
