"""The ingress's HTTP routes, one `APIRouter` per dialect or concern; `app.ROUTERS` lists them."""
