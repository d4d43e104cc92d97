# escrowguard image for docker-compose.yml: the package installed from this checkout.
# Editable install on purpose: settings read config/default.toml next to the package.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY config ./config
COPY schemas ./schemas
COPY escrowguard ./escrowguard
RUN pip install --no-cache-dir --disable-pip-version-check -e . \
    && useradd --create-home --uid 10001 escrowguard \
    && mkdir -p /app/var && chown escrowguard /app/var
USER escrowguard
ENTRYPOINT ["escrowguard"]
CMD ["--help"]
