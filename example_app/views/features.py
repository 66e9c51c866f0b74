"""``/api/features``: flags with a rollout percentage, evaluated per user."""

from __future__ import annotations

from flask import Blueprint, request
from flask.typing import ResponseReturnValue

from flask_tiered_state.domain.model import validate_state_id
from flask_tiered_state.errors import InvalidRequestError

from .. import features as flags
from ..http import load_body
from ..schemas import CreateFeatureRequest, RolloutRequest
from .common import actor, manager

__all__ = ["features"]

features = Blueprint("features", __name__, url_prefix="/features")


@features.get("")
def list_flags() -> ResponseReturnValue:
    return {"items": flags.list_features(manager())}


@features.post("")
def create() -> ResponseReturnValue:
    return flags.create_feature(manager(), load_body(CreateFeatureRequest()), actor=actor()), 201


@features.get("/<key>")
def show(key: str) -> ResponseReturnValue:
    return flags.get_feature(manager(), key)


@features.post("/<key>/rollout")
def rollout(key: str) -> ResponseReturnValue:
    body = load_body(RolloutRequest())
    return flags.set_rollout(manager(), key, body["rollout_percentage"], actor=actor())


@features.post("/<key>/enable")
def enable(key: str) -> ResponseReturnValue:
    return flags.enable_feature(manager(), key, actor=actor())


@features.post("/<key>/disable")
def disable(key: str) -> ResponseReturnValue:
    return flags.disable_feature(manager(), key, actor=actor())


@features.get("/<key>/evaluate")
def evaluate(key: str) -> ResponseReturnValue:
    user_id = request.args.get("user_id")
    if not user_id:
        raise InvalidRequestError(
            "Query parameter user_id is required: /api/features/<key>/evaluate?user_id=...",
            details={"parameter": "user_id"},
        )
    validate_state_id(user_id)
    return flags.evaluate(flags.get_feature(manager(), key), user_id)
