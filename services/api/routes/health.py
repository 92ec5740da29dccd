from enum import StrEnum
from typing import Any, Literal

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from sqlalchemy import text

from services.api.deps import GatewayDep

router = APIRouter(tags=["operations"])


class Health(BaseModel):
    status: Literal["ok"]


class ReadinessStatus(StrEnum):
    READY = "ready"
    UNAVAILABLE = "unavailable"


class Readiness(BaseModel):
    status: ReadinessStatus
    checks: dict[str, str] = Field(
        description="`database` and `broker`: `ok`, or what is wrong (e.g. `unavailable: OperationalError`)."
    )


@router.get("/healthz", response_model=Health)
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"description": "A dependency is unreachable", "model": Readiness}},
)
def readyz(gateway: GatewayDep) -> JSONResponse:
    """PostgreSQL and RabbitMQ are reachable (and RabbitMQ confirmed the last publishes)."""
    checks: dict[str, Any] = {}
    try:
        with gateway.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as error:  # noqa: BLE001 - any failure means "not ready", reported as such.
        checks["database"] = f"unavailable: {type(error).__name__}"
    try:
        with gateway.celery.connection_for_write() as connection:
            # One attempt, no back-off pause: a probe must answer quickly either way.
            connection.ensure_connection(
                max_retries=1, interval_start=0, timeout=gateway.settings.broker.connect_timeout_seconds
            )
        checks["broker"] = (
            "publishes failing, left to the outbox sweep" if gateway.publisher.standing_back else "ok"
        )
    except Exception as error:  # noqa: BLE001
        checks["broker"] = f"unavailable: {type(error).__name__}"
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": ReadinessStatus.READY if ready else ReadinessStatus.UNAVAILABLE, "checks": checks},
        status_code=200 if ready else 503,
    )


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
