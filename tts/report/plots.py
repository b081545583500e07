"""PNG figures from the report's tables (lists of row dicts, the same rows the CSVs hold).
Each figure says what it shows without the code: title, axis labels with units, legend."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.patches  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402


def _budget_axis(ax, label="generation budget per question (log scale)"):
  ax.set_xscale("log", base=2)
  ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
  ax.set_xlabel(label)
  ax.grid(alpha=0.3)


def _save(fig, path: str, dpi: int):
  fig.tight_layout()
  fig.savefig(path, dpi=dpi, bbox_inches="tight")  # keeps legends placed outside the axes
  plt.close(fig)


def _method_lines(ax, rows: list[dict], key: str):
  for method in sorted({r["method"] for r in rows}):
    mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["generations"])
    ax.plot([r["generations"] for r in mine], [r[key] for r in mine], marker="o", label=method)


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
  fig.suptitle(f"{title}: test accuracy against generation budget, by difficulty")
  _save(fig, path, dpi)


def compute_optimal(rows: list[dict], family: str, baseline: str, cost: float, path: str,
                    dpi: int):
  """Compute-optimal (oracle and predicted bins) against the baseline; the predicted curve
  also shifted right by the difficulty estimation it needs (charged)."""
  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  x = [r["budget"] for r in rows]
  ax.plot(x, [r["baseline"] for r in rows], marker="o", color="gray", label=baseline)
  ax.plot(x, [r["compute_optimal_oracle"] for r in rows], marker="s",
          label="compute-optimal, oracle bins")
  ax.plot(x, [r["compute_optimal_predicted"] for r in rows], marker="^",
          label="compute-optimal, predicted bins")
  ax.plot([r["charged_budget"] for r in rows], [r["compute_optimal_predicted"] for r in rows],
          marker="^", linestyle="--", alpha=0.6,
          label=f"predicted bins + {cost:g} generations to estimate difficulty")
  _budget_axis(ax)
  ax.set_ylabel("accuracy (2-fold cross-validated)")
  ax.set_title(f"{family}: compute-optimal against {baseline}")
  ax.legend(fontsize=8)
  _save(fig, path, dpi)


def revision_ratio(rows: list[dict], budget: int, bin_kind: str, path: str, dpi: int):
  """Accuracy against the sequential/parallel ratio at one budget, one line per bin."""
  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  for b in sorted({r["bin"] for r in rows}, key=int):
    mine = sorted((r for r in rows if r["bin"] == b), key=lambda r: r["ratio"])
    ax.plot([r["ratio"] for r in mine], [r["accuracy"] for r in mine], marker="o",
            label=f"{bin_kind} bin {b}")
  _budget_axis(ax, "sequential / parallel ratio: chain length / chains (log scale)")
  ax.set_ylabel("accuracy")
  ax.set_title(f"Revisions at N = {budget}: accuracy by sequential/parallel split")
  ax.legend(fontsize=8, title="1 = easiest", loc="upper left", bbox_to_anchor=(1.01, 1.0))
  _save(fig, path, dpi)


def flops_matched(rows: list[dict], families: list[str], path: str, dpi: int):
  """Relative accuracy difference (small + test-time compute vs the 14x model greedy) per
  bin, one bar per R; hatched bars: matched budget beyond the largest run (lower bound)."""
  fig, axes = plt.subplots(1, len(families), figsize=(6.0 * len(families), 4.2), squeeze=False)
  for ax, family in zip(axes[0], families):
    mine = [r for r in rows if r["family"] == family]
    bins = sorted({r["bin"] for r in mine}, key=int)
    ratios = sorted({r["R"] for r in mine})
    width = 0.8 / len(ratios)
    for i, ratio in enumerate(ratios):
      for j, b in enumerate(bins):
        r = next(x for x in mine if x["R"] == ratio and x["bin"] == b)
        value = r["relative_difference"]
        x = j + (i - (len(ratios) - 1) / 2) * width
        ax.bar(x, 0.0 if value is None else 100 * value, width, color=f"C{i}",
               hatch="//" if r["where"] == "beyond_largest_run" else None)
        if value is None:  # the 14x model gets nothing right: no relative difference
          ax.text(x, 0.03, "n/a", transform=ax.get_xaxis_transform(), ha="center",
                  fontsize=6, rotation=90)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(np.arange(len(bins)), [f"bin {b}" for b in bins])
    ax.set_xlabel("difficulty bin (1 = easiest)")
    ax.set_ylabel("relative accuracy difference (%)\n> 0: test-time compute wins")
    ax.set_title(f"{family}: small model + test-time compute\nvs the 14x model greedy, "
                 "at matched FLOPs")
    handles = [matplotlib.patches.Patch(color=f"C{i}", label=f"R = {ratio:g}")
               for i, ratio in enumerate(ratios)]
    handles.append(matplotlib.patches.Patch(facecolor="white", edgecolor="black", hatch="//",
                                            label="beyond the largest run (lower bound)"))
    ax.legend(handles=handles, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2),
              ncol=2, title="R = D_inference / D_pretrain", title_fontsize=8)
    ax.grid(alpha=0.3, axis="y")
  _save(fig, path, dpi)
