# One image for web (gunicorn), worker and beat; docker-compose.yml picks the command.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=config.settings.production RUNLEDGER_VAR_DIR=/app/var

WORKDIR /app
RUN useradd --create-home --uid 10001 runledger
COPY pyproject.toml requirements.lock README.md ./
COPY apps ./apps
COPY config ./config
RUN pip install --no-cache-dir -c requirements.lock .
COPY . .
# collectstatic connects to none of them; production settings only insist that they are named.
RUN mkdir -p /app/var && DJANGO_SECRET_KEY=build-only DJANGO_ALLOWED_HOSTS=localhost \
    DATABASE_URL=postgres://build-only@localhost/none REDIS_URL=redis://localhost:6379/0 OPENAI_API_KEY=build-only \
    python manage.py collectstatic --noinput && chown -R runledger /app/var
USER runledger
EXPOSE 8000
CMD ["gunicorn", "config.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3", "--access-logfile", "-"]
