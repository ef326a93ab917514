# One image recipe for every service: `docker build --build-arg SERVICE=status-registry .`
FROM python:3.11-slim AS build
ENV UV_PYTHON_DOWNLOADS=never UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /app
COPY pyproject.toml uv.lock ./
COPY libs libs
COPY services services
ARG SERVICE
RUN uv sync --frozen --no-dev --package "${SERVICE}" --no-editable

FROM python:3.11-slim
ARG SERVICE
ENV PATH=/app/.venv/bin:$PATH PYTHONUNBUFFERED=1 SERVICE=${SERVICE}
COPY --from=build /app/.venv /app/.venv
RUN useradd --system --uid 10001 app
USER app
# The package of a service is its name with '-' as '_' (status-registry -> status_registry).
CMD ["sh", "-c", "exec python -m $(echo \"$SERVICE\" | tr - _)"]
