FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PORT=8000
WORKDIR /app

COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY bulkproc ./bulkproc
COPY wsgi.py gunicorn.conf.py ./

RUN useradd --create-home bulkproc && mkdir -p /app/instance && chown bulkproc /app/instance
USER bulkproc

EXPOSE 8000
CMD ["gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"]
