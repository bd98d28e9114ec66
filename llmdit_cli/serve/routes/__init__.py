"""The server's endpoints, one `APIRouter` module per area; `serve/app.py` includes them."""
