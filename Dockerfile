# pipecat-sip bot: listens for SIP on udp 6060, RTP on udp 10000-10999.
# Run with host networking (or publish the UDP ports and set SIP_PUBLIC_ADDRESS):
#   docker build -t pipecat-sip-bot .
#   docker run --rm --network host --env-file .env pipecat-sip-bot
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    UV_COMPILE_BYTECODE=1 \
    SIP_SERVER_HOST=0.0.0.0 \
    SIP_SERVER_PORT=6060 \
    SIP_RTP_PORT_RANGE=10000-10999

RUN pip install --no-cache-dir uv
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
COPY pipecat_sip ./pipecat_sip
RUN uv sync --frozen --no-dev
COPY bot.py ./

EXPOSE 6060/udp
EXPOSE 10000-10999/udp

# SIGTERM hangs up every live call with BYE, then the process exits 0.
STOPSIGNAL SIGTERM
CMD ["uv", "run", "--no-sync", "python", "bot.py", "--transport", "sip"]
