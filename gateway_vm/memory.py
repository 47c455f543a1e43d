"""The gateway's memory plan: all its processes together stay under 512 MiB RSS.

RSS is counted per process, shared pages included, so each forked worker
costs its interpreter again (measured: ~37 MiB before it holds any data; the
main process ~47 MiB). The plan therefore

- runs no more workers than there are CPUs (sealing and opening are CPU-bound;
  more processes only add memory), nor more than fit beside the buffer budget
  under the ceiling;
- makes ``buffer_budget_bytes`` cover every data buffer of a destination or
  relay: one frame buffer per inbound connection, and the chunk pool (shared
  by the workers, see :class:`gateway_vm.runtime.SharedBudget`) gets the rest.

Sources hold two segments per connection (read and sealed); they use no pool.
"""

from __future__ import annotations

import os

from skyhop.crypto import HEADER_SIZE, TAG_BYTES
from skyhop.models import GatewayConfig

MiB = 1024 * 1024
RSS_CEILING = 512 * MiB
MAIN_RSS = 50 * MiB  # the main process (interpreter, imports, control API)
WORKER_RSS = 40 * MiB  # one forked worker before it holds data
SLACK = 40 * MiB  # TLS and socket buffers, decompression scratch, heap growth


def cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def frame_buffer(cfg: GatewayConfig) -> int:
    """Bytes a connection's frame buffer holds: one sealed segment and its header."""
    return HEADER_SIZE + cfg.segment_size + TAG_BYTES + 1024


def plan(cfg: GatewayConfig) -> tuple[GatewayConfig, list[str]]:
    """The configuration to run with (``workers`` possibly lowered) and notes on why."""
    notes: list[str] = []
    fit = (RSS_CEILING - MAIN_RSS - SLACK - cfg.buffer_budget_bytes) // WORKER_RSS
    workers = max(1, min(cfg.workers, cpus(), fit))
    if workers < cfg.workers:
        notes.append(
            f"running {workers} workers instead of {cfg.workers} "
            f"({cpus()} CPUs; {cfg.buffer_budget_bytes // MiB} MiB buffer budget under a "
            f"{RSS_CEILING // MiB} MiB ceiling)"
        )
    return cfg.model_copy(update={"workers": workers}), notes


def pool_capacity(cfg: GatewayConfig) -> int:
    """The chunk pool shared by a gateway's workers: the budget less the
    connections' frame buffers (at least one segment)."""
    readers = cfg.connections * frame_buffer(cfg)
    return max(cfg.segment_size, cfg.buffer_budget_bytes - readers)
