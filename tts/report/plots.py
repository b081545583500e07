"""PNG figures from the report's tables (lists of row dicts, the same rows the CSVs hold).
Each figure says what it shows without the code: title, axis labels with units, legend.
A column `x` with `x_lo` / `x_hi` beside it is drawn with its 95% interval (band or bar)."""
import io

import matplotlib
import matplotlib.lines

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.patches  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402

from tts.atomic_files import write_bytes_atomic  # noqa: E402


def _budget_axis(ax, label="generation budget per question (log scale)"):
  ax.set_xscale("log", base=2)
  ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
  ax.set_xlabel(label)
  ax.grid(alpha=0.3)


def _save(fig, path: str, dpi: int):
  fig.tight_layout()
  png = io.BytesIO()
  fig.savefig(png, format="png", dpi=dpi, bbox_inches="tight")  # legends outside the axes
  plt.close(fig)
  write_bytes_atomic(path, png.getvalue())


def _line(ax, rows: list[dict], x: str, key: str, band: bool = True, **style):
  """A curve of rows[key] against rows[x], with its interval as a band."""
  ax.plot([r[x] for r in rows], [r[key] for r in rows], **style)
  if band:
    ax.fill_between([r[x] for r in rows], [r[f"{key}_lo"] for r in rows],
                    [r[f"{key}_hi"] for r in rows], alpha=0.15,
                    color=ax.get_lines()[-1].get_color(), linewidth=0)


def _method_lines(ax, rows: list[dict], key: str):
  for method in sorted({r["method"] for r in rows}):
    mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["generations"])
    _line(ax, mine, "generations", key, marker="o", label=method)


def methods_vs_budget(rows: list[dict], title: str, bins: list[str], bin_kind: str, path: str,
                      dpi: int):
  """Accuracy against generations for every method: all questions, then one panel per bin."""
  rows_, cols = -(-(len(bins) + 1) // 3), min(3, len(bins) + 1)
  fig, grid = plt.subplots(rows_, cols, figsize=(4.2 * cols, 3.4 * rows_), sharey=True,
                           squeeze=False)
  axes = grid.ravel()
  _method_lines(axes[0], rows, "accuracy")
  axes[0].set_title("all questions")
  for ax in grid[:, 0]:
    ax.set_ylabel("accuracy")
  for ax, b in zip(axes[1:], bins):
    _method_lines(ax, rows, f"bin_{b}")
    ax.set_title(f"{bin_kind} bin {b}" + (" (easiest)" if b == bins[0] else
                                         " (hardest)" if b == bins[-1] else ""))
  for ax in axes[:len(bins) + 1]:
    _budget_axis(ax, "generations per question (log scale)")
  for ax in axes[len(bins) + 1:]:
    ax.set_visible(False)
  handles, labels = axes[0].get_legend_handles_labels()
  fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 5), fontsize=8,
             bbox_to_anchor=(0.5, 0.0), title="method")
  fig.suptitle(f"{title}: test accuracy against generation budget, by difficulty "
               "(bands: 95% intervals)")
  _save(fig, path, dpi)


def compute_optimal(rows: list[dict], family: str, baseline: str, costs: dict, path: str,
                    dpi: int):
  """Compute-optimal under each bin kind against the baseline; a curve whose bins cost
  generations to estimate also shifted right by them (charged)."""
  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  _line(ax, rows, "budget", "baseline", marker="o", color="gray", label=baseline)
  for (kind, cost), marker in zip(costs.items(), "s^Dv"):
    _line(ax, rows, "budget", f"compute_optimal_{kind}", marker=marker,
          label=f"compute-optimal, {kind} bins")
    if cost:
      _line(ax, rows, f"charged_budget_{kind}", f"compute_optimal_{kind}", band=False,
            marker=marker, linestyle="--", alpha=0.6, color=ax.get_lines()[-1].get_color(),
            label=f"{kind} bins + {cost:g} generations to estimate difficulty")
  _budget_axis(ax)
  ax.set_ylabel("accuracy (2-fold cross-validated)")
  ax.set_title(f"{family}: compute-optimal against {baseline}\n(bands: 95% intervals)")
  fig.legend(*ax.get_legend_handles_labels(), loc="upper center", ncol=2, fontsize=8,
             bbox_to_anchor=(0.5, 0.0))  # below the axes, off the bands
  _save(fig, path, dpi)


def revision_ratio(rows: list[dict], budget: int, bin_kind: str, path: str, dpi: int):
  """Accuracy against the sequential/parallel ratio at one budget, one line per bin."""
  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  for b in sorted({r["bin"] for r in rows}, key=int):
    mine = sorted((r for r in rows if r["bin"] == b), key=lambda r: r["ratio"])
    ax.errorbar([r["ratio"] for r in mine], [r["accuracy"] for r in mine],
                yerr=_errors(mine, "accuracy"), marker="o", capsize=2,
                label=f"{bin_kind} bin {b}")
  _budget_axis(ax, "sequential / parallel ratio: chain length / chains (log scale)")
  ax.set_ylabel("accuracy")
  ax.set_title(f"Revisions at N = {budget}: accuracy by sequential/parallel split\n"
               "(bars: 95% intervals)")
  ax.legend(fontsize=8, title="1 = easiest", loc="upper left", bbox_to_anchor=(1.01, 1.0))
  _save(fig, path, dpi)


def _errors(rows: list[dict], key: str) -> np.ndarray:
  """float[2, n]: distances from rows[key] down to key_lo and up to key_hi."""
  return np.array([[r[key] - r[f"{key}_lo"] for r in rows], [r[f"{key}_hi"] - r[key]
                                                              for r in rows]])


def flops_matched(rows: list[dict], families: list[str], path: str, dpi: int):
  """Accuracy difference (small + test-time compute minus the 14x model greedy) per bin, one
  bar per R with its 95% interval; hatched bars: matched budget beyond the largest run (the
  small model's accuracy a lower bound)."""
  fig, axes = plt.subplots(1, len(families), figsize=(6.0 * len(families), 4.2), squeeze=False)
  for ax, family in zip(axes[0], families):
    mine = [r for r in rows if r["family"] == family]
    bins = sorted({r["bin"] for r in mine}, key=int)
    ratios = sorted({r["R"] for r in mine})
    width = 0.8 / len(ratios)
    for i, ratio in enumerate(ratios):
      cells = [next(x for x in mine if x["R"] == ratio and x["bin"] == b) for b in bins]
      xs = np.arange(len(bins)) + (i - (len(ratios) - 1) / 2) * width
      for x, r in zip(xs, cells):
        ax.bar(x, 100 * r["difference"], width, color=f"C{i}",
               hatch="//" if r["where"] == "beyond_largest_run" else None)
      ax.errorbar(xs, [100 * r["difference"] for r in cells],
                  yerr=100 * _errors(cells, "difference"), fmt="none", ecolor="black",
                  capsize=2, linewidth=0.8)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(np.arange(len(bins)), [f"bin {b}" for b in bins])
    ax.set_xlabel("difficulty bin (1 = easiest)")
    ax.set_ylabel("accuracy difference (points)\n> 0: test-time compute wins")
    ax.set_title(f"{family}: small model + test-time compute\nminus the 14x model greedy, "
                 "at matched FLOPs (95% intervals)")
    handles = [matplotlib.patches.Patch(color=f"C{i}", label=f"R = {ratio:g}")
               for i, ratio in enumerate(ratios)]
    handles.append(matplotlib.patches.Patch(facecolor="white", edgecolor="black", hatch="//",
                                            label="beyond the largest run (lower bound)"))
    ax.legend(handles=handles, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2),
              ncol=2, title="R = D_inference / D_pretrain", title_fontsize=8)
    ax.grid(alpha=0.3, axis="y")
  _save(fig, path, dpi)


def flops_tradeoff(rows: list[dict], family: str, bin_kind: str, path: str, dpi: int):
  """Accuracy against inference FLOPs per question: the small model's compute-optimal curve
  (band: 95% interval), the 14x model greedy (point, interval bar), and for each R the
  small model's matched FLOPs (dotted line) and accuracy there (hollow: beyond the largest
  run, a lower bound); one panel for all questions, one per bin."""
  groups = sorted({r["group"] for r in rows}, key=lambda g: -1 if g == "all" else int(g))
  rows_, cols = -(-len(groups) // 3), min(3, len(groups))
  fig, grid = plt.subplots(rows_, cols, figsize=(4.4 * cols, 3.6 * rows_), sharey=True,
                           squeeze=False)
  axes = grid.ravel()
  for ax, g in zip(axes, groups):
    mine = [r for r in rows if r["group"] == g]
    curve = sorted((r for r in mine if r["series"] == "compute_optimal"),
                   key=lambda r: r["flops"])
    _line(ax, curve, "flops", "accuracy", marker="o", markersize=3, color="C0",
          label="small + compute-optimal")
    large = [r for r in mine if r["series"] == "large_greedy"]
    ax.errorbar([r["flops"] for r in large], [r["accuracy"] for r in large],
                yerr=_errors(large, "accuracy"), fmt="*", color="black", markersize=10,
                capsize=3, label="14x model greedy")
    matched = [r for r in mine if r["series"] == "matched"]
    for i, r in enumerate(sorted(matched, key=lambda r: r["R"])):
      color = f"C{i + 1}"
      ax.axvline(r["flops"], color=color, linestyle=":", linewidth=1)
      beyond = r["where"] == "beyond_largest_run"
      ax.plot([r["flops"]], [r["accuracy"]], marker="D", color=color, linestyle="none",
              markerfacecolor="white" if beyond else color, label=f"matched, R = {r['R']:g}")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("inference FLOPs per question (log scale)")
    ax.set_title("all questions" if g == "all" else f"{bin_kind} bin {g}")
    ax.grid(alpha=0.3)
  for ax in grid[:, 0]:
    ax.set_ylabel("accuracy")
  for ax in axes[len(groups):]:
    ax.set_visible(False)
  handles, labels = axes[0].get_legend_handles_labels()  # every panel has every series
  handles = [matplotlib.lines.Line2D([], [], marker="D", color=h.get_color(), linestyle="none")
             if label.startswith("matched") else h for h, label in zip(handles, labels)]
  handles.append(matplotlib.lines.Line2D([], [], marker="D", color="gray", linestyle="none",
                                         markerfacecolor="white"))
  labels.append("hollow: beyond the largest run (a lower bound)")
  fig.legend(handles, labels, loc="upper center", ncol=3, fontsize=8,
             bbox_to_anchor=(0.5, 0.0))
  fig.suptitle(f"{family}: accuracy against FLOPs, small model + test-time compute vs the "
               "14x model (bands and bars: 95% intervals)")
  _save(fig, path, dpi)
