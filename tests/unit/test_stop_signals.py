"""A command whose work runs in other threads stops on SIGTERM whichever thread the kernel hands it to."""

from __future__ import annotations

import signal
import subprocess
import sys

WAIT = """
import signal, threading, time
from finsent.stop_signals import StopSignals

signals = StopSignals()

def signal_this_thread():
    time.sleep(0.5)  # the main thread is waiting by then
    signal.pthread_kill(threading.get_ident(), signal.SIGTERM)

threading.Thread(target=signal_this_thread, daemon=True).start()
print(int(signals.wait()), flush=True)
"""


def test_a_sigterm_delivered_to_another_thread_ends_the_wait():
    # With a handler that sets a threading.Event the main thread waits on, this hangs until the timeout: the
    # main thread, blocked on a lock, is not woken by a signal another thread received.
    done = subprocess.run([sys.executable, "-c", WAIT], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(int(signal.SIGTERM))


TWICE = """
import os, signal, threading
from finsent.stop_signals import StopSignals

stop = threading.Event()
signals = StopSignals(then=stop)
os.kill(os.getpid(), signal.SIGTERM)
print(int(signals.wait()), stop.is_set(), flush=True)
os.kill(os.getpid(), signal.SIGTERM)  # the second: the process's own default, so it ends here
print("still running", flush=True)
"""


def test_the_first_signal_sets_the_event_and_a_second_ends_the_process():
    done = subprocess.run([sys.executable, "-c", TWICE], capture_output=True, text=True, timeout=60)
    assert done.stdout.splitlines() == [f"{int(signal.SIGTERM)} True"]
    assert done.returncode == -signal.SIGTERM


IN_THE_LOOP = """
import asyncio, os, signal, sys
from finsent.stop_signals import install_stop_handlers

async def main():
    stop = asyncio.Event()
    install_stop_handlers(stop, second_ends=sys.argv[1] == "one-shot")
    os.kill(os.getpid(), signal.SIGTERM)
    await stop.wait()
    print("stopping", flush=True)
    os.kill(os.getpid(), signal.SIGTERM)  # a second, while the command winds down (a poll stuck on a slow feed)
    await asyncio.sleep(0.5)
    print("still running", flush=True)

asyncio.run(main())
"""


def test_a_one_shot_command_s_second_signal_ends_it_and_a_service_s_does_not():
    # Before, the loop took every signal: a second Ctrl-C or SIGTERM did nothing while `ingest --once` waited out
    # a slow feed's fetch (20 s) or a Kafka gone (120 s); only SIGKILL ended it.
    one_shot = subprocess.run([sys.executable, "-c", IN_THE_LOOP, "one-shot"], capture_output=True, text=True,
                              timeout=60)
    assert one_shot.stdout.splitlines() == ["stopping"] and one_shot.returncode == -signal.SIGTERM
    service = subprocess.run([sys.executable, "-c", IN_THE_LOOP, "service"], capture_output=True, text=True,
                             timeout=60)
    assert service.stdout.splitlines() == ["stopping", "still running"] and service.returncode == 0
