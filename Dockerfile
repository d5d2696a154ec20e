# Pipecat Cloud agent image (pcc-deploy.toml points here), built as Pipecat's
# quickstart builds one: Pipecat Cloud's base image runs the HTTP/WebSocket
# agent server and calls bot.py's bot(runner_args) once per session.
#   docker build --platform=linux/arm64 -t your-registry/pipecat-sip-bot:0.1 .
#   docker push your-registry/pipecat-sip-bot:0.1 && pcc deploy
# SIP on Pipecat Cloud is egress-only: sessions dial out or register (README,
# "Pipecat Cloud"). The standalone SIP server image is Dockerfile.server.
FROM dailyco/pipecat-base:latest-py3.11

# Enable bytecode compilation
ENV UV_COMPILE_BYTECODE=1

# Copy from the cache instead of linking since it's a mounted volume
ENV UV_LINK_MODE=copy

# The project's dependencies from the lockfile (the package itself comes next)
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --locked --no-install-project --no-dev

# pipecat_sip and the bot; the base image's entry point imports bot.py from /app
COPY ./pipecat_sip ./pipecat_sip
COPY ./bot.py bot.py
