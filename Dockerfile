FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY hillmix_site hillmix_site
COPY datasets datasets
COPY elicitation elicitation
COPY training training
# torch==2.13.0 from PyPI brings CUDA libraries, which GPU workers want.
RUN pip install .
COPY . .
RUN DATABASE_URL=sqlite:////tmp/build.sqlite3 python manage.py collectstatic --noinput
# The app runs unprivileged; the media and static volumes start out owned by it.
RUN useradd --system --uid 10001 --home-dir /app hillmix \
    && mkdir -p /data/media /data/static && chown -R hillmix /data
USER hillmix
EXPOSE 8000
# Settings (workers, threads, an access log without query strings): gunicorn.conf.py
CMD ["gunicorn", "hillmix_site.wsgi"]
