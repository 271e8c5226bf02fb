"""The framework's floor for bench/load.py: a minimal view that writes one row.
Mounted only when HILLMIX_BENCH_FLOOR is set (never in a real deployment)."""

from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

FLOOR_TABLE = "bench_floor"


@csrf_exempt
@require_POST
def floor(request: HttpRequest) -> HttpResponse:
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {FLOOR_TABLE} (body) VALUES (%s)", [request.body[:1000]])
    return HttpResponse(status=201)
