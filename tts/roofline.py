"""This machine's measured compute peak and memory bandwidth: the yardsticks benchmarks print
their rates against."""
import time

import jax
import jax.numpy as jnp


def best_seconds(f, x, repeats: int) -> float:
  """Fastest of `repeats` timed calls of jitted `f` on `x`, after one untimed (compiling)."""
  f(x).block_until_ready()
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    f(x).block_until_ready()
    times.append(time.perf_counter() - t)
  return min(times)


def matmul_peak(sizes=(512, 1024, 2048), repeats=5) -> tuple[float, int]:
  """Best measured f32 GFLOP/s over a few square matmuls through jax.jit, and its size."""
  best = (0.0, 0)
  for n in sizes:
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    seconds = best_seconds(jax.jit(lambda x: x @ x), a, repeats)
    best = max(best, (2 * n ** 3 / seconds / 1e9, n))
  return best


def copy_bandwidth(megabytes: int = 256, repeats: int = 5) -> float:
  """Best measured GB/s of an f32 elementwise pass through jax.jit (one read, one write)."""
  x = jnp.ones((megabytes * 2 ** 20 // 4,), jnp.float32)
  return 2 * x.nbytes / best_seconds(jax.jit(lambda v: v * 1.5), x, repeats) / 1e9


def bytes_accessed(compiled) -> float:
  """Bytes XLA's cost analysis counts as read and written by one call of a compiled function."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("bytes accessed", 0.0))
