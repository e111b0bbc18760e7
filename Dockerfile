# The finsent processes (ingest, worker, scheduler, alerts, dashboard) in one image.
FROM python:3.11-slim
WORKDIR /app
COPY constraints.txt pyproject.toml README.md ./
COPY finsent ./finsent
COPY ingest ./ingest
COPY stream ./stream
COPY model ./model
COPY retrain ./retrain
COPY alerts ./alerts
COPY dashboards ./dashboards
COPY bench ./bench
RUN pip install --no-cache-dir -c constraints.txt . \
    && useradd --system --create-home finsent && mkdir -p /var/lib/finsent && chown finsent /var/lib/finsent
USER finsent
ENV HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
ENTRYPOINT []
CMD ["finsent", "--help"]
