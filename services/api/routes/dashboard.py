"""GET /dashboard: the live operations page, one self-contained file. The page needs no key; the data
it shows comes from the /v1 API with the key the operator enters (kept in the browser)."""

import base64
import hashlib
import re
from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter()

PAGE = files("services.api").joinpath("static/dashboard.html").read_text(encoding="utf-8")


def _inline_hashes(page: str, tag: str) -> str:
    """CSP source expressions allowing exactly the page's own inline <script> or <style> blocks."""
    blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", page, flags=re.DOTALL)
    return " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(block.encode()).digest()).decode()}'" for block in blocks
    )


# The page keeps an API key in localStorage, so injected script would be costly: only the page's own
# inline code runs, it talks to this origin only, and no other site may frame it.
HEADERS = {
    "Content-Security-Policy": "; ".join(
        [
            "default-src 'none'",
            f"script-src {_inline_hashes(PAGE, 'script')}",
            f"style-src {_inline_hashes(PAGE, 'style')}",
            "connect-src 'self'",
            "img-src data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@router.get("/dashboard", response_class=HTMLResponse, include_in_schema=False)
async def dashboard() -> HTMLResponse:
    return HTMLResponse(PAGE, headers=HEADERS)
