"""A Flask-style blueprint.  Only routes marked with the marker comment are exported."""
from functools import wraps

from flask import Blueprint, jsonify, request

bp = Blueprint("users", __name__, url_prefix="/api")


def login_required(view):
    @wraps(view)
    def wrapper(*args, **kwargs):
        if request.headers.get("Authorization") is None:
            return jsonify(error="unauthorized"), 401
        return view(*args, **kwargs)

    return wrapper


#%function%
@bp.route("/users", methods=["GET"])
def list_users(page: int = 1, per_page: int = 20):
    """List users, one page at a time."""
    return jsonify(page=page, per_page=per_page)


#%function%
@bp.route(
    "/users/<int:user_id>",
    methods=["GET", "PUT"],  # PUT replaces the whole record
    defaults={"fields": None},
)
@login_required
def user_detail(user_id: int, fields: list[str] | None = None) -> dict:
    """Fetch or replace one user.

    The `fields` argument filters the returned keys.
    """
    return {"id": user_id, "fields": fields}


@bp.route("/users/<int:user_id>", methods=["DELETE"])
#%function%
@login_required
def delete_user(user_id):
    """Not exported: the marker sits between the decorators, not above them."""
    return "", 204


#%function%

@bp.errorhandler(404)
def not_found(error) -> tuple[dict, int]:
    """Blank lines between the marker and the decorators are fine."""
    return {"error": str(error)}, 404


@bp.route("/health")
def health():
    return "ok"
