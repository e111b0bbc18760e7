"""A real single-node Apache Kafka (KRaft) broker from the Maven Central jars."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import psutil

from finsent.services import artifacts
from finsent.services.java import find_java_home
from finsent.services.process import (
    PidFile, ServiceError, port_in_use, start_background, stop_process, wait_until)
from finsent.settings import Settings

_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={data}
num.partitions={partitions}
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
log.retention.hours=168
message.max.bytes=11534336
"""

# The broker's own log rolls (KAFKA_LOG_MAX_BYTES x KAFKA_LOG_BACKUPS): at INFO a test run writes
# about 200 MB. The process's stdout, which start_background appends to server.log and which a
# failed start quotes, gets warnings, errors and whatever the JVM itself prints.
KAFKA_LOG_MAX_BYTES = "50MB"
KAFKA_LOG_BACKUPS = 4
_LOG4J = """\
log4j.rootLogger=INFO, stdout, rolling
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.Threshold=WARN
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.appender.rolling=org.apache.log4j.RollingFileAppender
log4j.appender.rolling.File={log_file}
log4j.appender.rolling.MaxFileSize={max_bytes}
log4j.appender.rolling.MaxBackupIndex={backups}
log4j.appender.rolling.layout=org.apache.log4j.PatternLayout
log4j.appender.rolling.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka=INFO
log4j.logger.org.apache.kafka=INFO
log4j.logger.state.change.logger=WARN
"""


class KafkaServer:
    name = "kafka"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.services_path / "kafka"
        self.data = self.root / "data"
        self.log_path = self.root / "logs" / "server.log"  # stdout: warnings, errors, the JVM's own output
        self.info_log_path = self.root / "logs" / "kafka.log"  # everything, rolled
        self.pid_file = PidFile(self.root / "kafka.pid")

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.settings.kafka_port}"

    def fetched(self) -> bool:
        """Whether the cache holds this version already, so that starting it downloads nothing."""
        return artifacts.fetched(artifacts.kafka_folder(self.settings.cache_dir, self.settings.kafka_version))

    def process(self) -> psutil.Process | None:
        return self.pid_file.process()

    def _java(self) -> Path:
        home = find_java_home(11, self.settings.java_home, "Kafka 3.9", "FINSENT_JAVA_HOME")
        return home / "bin" / "java"

    def _write_config(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        props = self.root / "server.properties"
        props.write_text(
            _PROPERTIES.format(
                port=self.settings.kafka_port,
                controller_port=self.settings.kafka_controller_port,
                data=self.data,
                partitions=self.settings.topic_partitions,
            )
        )
        (self.root / "log4j.properties").write_text(
            _LOG4J.format(log_file=self.info_log_path, max_bytes=KAFKA_LOG_MAX_BYTES, backups=KAFKA_LOG_BACKUPS))
        return props

    def _format_storage(self, java: Path, classpath: str, props: Path) -> None:
        if (self.data / "meta.properties").exists():
            return
        cluster_id = _kafka_uuid()
        cmd = [str(java), "-cp", classpath, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=self._env())  # noqa: S603
        if result.returncode != 0:
            raise ServiceError(f"Kafka storage format failed:\n{result.stdout}\n{result.stderr}")

    def _env(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}

    def start(self) -> psutil.Process:
        java = self._java()
        libs = artifacts.kafka_libs(self.settings.cache_dir, self.settings.kafka_version)
        classpath = str(libs / "*")
        props = self._write_config()
        self._format_storage(java, classpath, props)
        heap = self.settings.kafka_heap
        argv = [
            str(java), f"-Xms{heap}", f"-Xmx{heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{self.root / 'log4j.properties'}",
            "-cp", classpath, "kafka.Kafka", str(props),
        ]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        return start_background(argv, pid_file=self.pid_file, log_path=self.log_path, env=self._env(), cwd=self.root)

    def wait_healthy(self, proc: psutil.Process, timeout: float) -> None:
        wait_until(self.health, timeout=timeout, proc=proc, log_path=self.log_path, name="Kafka")

    def health(self) -> bool:
        """Healthy when kafka-python gets cluster metadata with a live broker.

        The port is tried first: while the broker starts, kafka-python would log every refused
        bootstrap at ERROR, and `finsent up` would print a screenful of them.
        """
        from kafka import KafkaAdminClient

        if not port_in_use(self.settings.kafka_port):
            return False
        admin = KafkaAdminClient(bootstrap_servers=[self.bootstrap], request_timeout_ms=5000)
        try:
            return bool(admin.describe_cluster().get("brokers"))
        finally:
            admin.close()

    def stop(self) -> bool:
        proc = self.process()
        if proc is None:
            return False
        stop_process(proc, timeout=60)
        self.pid_file.remove()
        return True


def _kafka_uuid() -> str:
    """A random cluster id in Kafka's base64url form (what ``kafka-storage random-uuid`` prints).

    Like Kafka's own ``Uuid.randomUuid``, it never starts with "-": the storage tool's
    argument parser would read such an id as an option and refuse to format.
    """
    import base64

    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id
