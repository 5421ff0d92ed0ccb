"""Preloaded by the worker processes of the LocalCluster that ``--workers`` starts (``dask_setup`` is Dask's preload
hook): they ignore Ctrl-C. A terminal sends Ctrl-C to the whole process group, workers included; each printed its
KeyboardInterrupt traceback before our one line, while the main process already stops the run and closes the
cluster, which ends them."""
import signal
import threading


def dask_setup(worker=None) -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
