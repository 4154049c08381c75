# The service's image: gunicorn serving bulkproc on $PORT (8000), as a non-root user. It is not meant
# to face the internet alone (gunicorn does not buffer slow clients): docker-compose.yml puts nginx
# in front of it, and Render's own proxy does there.
# The Python version matches .python-version and render.yaml.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PORT=8000
WORKDIR /app

COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY bulkproc ./bulkproc
COPY wsgi.py gunicorn.conf.py ./

RUN useradd --create-home bulkproc && mkdir -p /app/instance && chown bulkproc /app/instance
USER bulkproc
# Without DATABASE_URL the job store is SQLite in this folder. No VOLUME here (it would leave an
# anonymous volume behind every container, PostgreSQL or not): mount a named one to keep SQLite's
# batches, `-v bulkproc-data:/app/instance` (a new volume takes this folder's owner, bulkproc).

EXPOSE 8000
# The slim image has no curl. urlopen raises on a refused connection and on any non-2xx answer.
HEALTHCHECK --interval=5s --timeout=4s --start-period=30s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('PORT', '8000'), timeout=4)"
# The launcher checks every setting and the job store (one line when one is wrong), then execs gunicorn.
CMD ["python", "-m", "bulkproc.serve"]
