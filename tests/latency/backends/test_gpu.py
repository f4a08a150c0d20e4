"""The device timing loop, driven here by a host clock standing in for a CUDA event API."""

import time

from mdp_trt.latency.backends.gpu import DeviceClock, gpu_description, time_device_runs
from mdp_trt.latency.backends.timing import TimingPolicy


class HostEvents:
    """Events that read the host clock when recorded; counts creations and releases."""

    def __init__(self) -> None:
        self.created = self.released = self.syncs = 0

    def clock(self) -> DeviceClock:
        def new_event():
            self.created += 1
            return [None]

        def record(event):
            event[0] = time.perf_counter()

        def release(event):
            self.released += 1

        def sync():
            self.syncs += 1

        return DeviceClock(new_event, record, lambda a, b: (b[0] - a[0]) * 1e3, sync, release)


def test_every_run_gets_an_event_pair_and_events_are_released():
    events = HostEvents()
    calls = []
    policy = TimingPolicy(warmup_runs=3, warmup_s=0.0, budget_s=0.0, min_repeats=9,
                          max_repeats=9)
    m = time_device_runs(lambda: calls.append(time.sleep(0.001)), events.clock(), policy)
    assert m.repeats == 9 and events.created == 18 and events.released == 18
    assert len(calls) >= 3 + 9
    assert m.median_ms >= 1.0 and m.p10_ms <= m.median_ms <= m.p90_ms


def test_a_noisy_series_is_retried_and_the_fastest_kept():
    # Scripted event readings: the first series alternates 2 ms and 0.1 ms (spread far above
    # 0.5), the retry reads a steady 0.5 ms.
    readings = iter([2.0, 0.1] * 5 + [0.5] * 10)
    clock = DeviceClock(new_event=object, record=lambda e: None,
                        elapsed_ms=lambda a, b: next(readings), synchronize=lambda: None)
    policy = TimingPolicy(warmup_runs=2, warmup_s=0.0, budget_s=0.0, min_repeats=10,
                          max_repeats=10, max_spread=0.5, retries=2)
    m = time_device_runs(lambda: None, clock, policy)
    assert m.median_ms == 0.5 and m.spread == 0.0 and m.repeats == 10
    assert next(readings, None) is None  # a steady series ends the retries


def test_gpu_description_falls_back_to_the_index_without_a_driver(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert gpu_description(0) == "CUDA device 0"
