"""This machine's measured compute peak, the yardstick benchmarks print their rates against."""
import time

import jax
import jax.numpy as jnp


def matmul_peak(sizes=(512, 1024, 2048), repeats=5) -> tuple[float, int]:
  """Best measured f32 GFLOP/s over a few square matmuls through jax.jit, and its size."""
  best = (0.0, 0)
  for n in sizes:
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    times = []
    for _ in range(repeats):
      t = time.perf_counter()
      f(a).block_until_ready()
      times.append(time.perf_counter() - t)
    best = max(best, (2 * n ** 3 / min(times) / 1e9, n))
  return best
