"""`report` stage: figures, the tables behind them, and the findings summary.

Reads select/selection.json, select/settings.json and flops/flops.json; writes under
report/: one PNG and one CSV per figure, summary.json (findings, efficiency ratios,
FLOPs-matched differences per bin) and summary.md (the same for a reader). Keys in
WORKSPACE.md.
"""
import csv
import io
import os

from tts import config_schema
from tts.atomic_files import read_json, write_json_atomic, write_lines_atomic
from tts.report import findings, plots
from tts.scaling.config import ReportConfig

FAMILIES = ("search", "revisions")  # report order


def _read(workdir: str, stage: str, name: str) -> dict:
  path = os.path.join(workdir, stage, name)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found; run the {stage} stage first")
  return read_json(path)


def write_csv(path: str, rows: list[dict]):
  out = io.StringIO()
  writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
  writer.writeheader()
  writer.writerows(rows)
  write_lines_atomic(path, [out.getvalue()])


def method_rows(settings: list[dict], bin_kind: str) -> list[dict]:
  return [{"method": s["method"], "n": s["n"], "generations": s["generations"],
           "accuracy": s["accuracy"], "mean_flops": s["mean_flops"],
           **{f"bin_{b}": a for b, a in s[f"{bin_kind}_bins"].items()}} for s in settings]


def compute_optimal_rows(entry: dict, cost: float) -> list[dict]:
  return [{"budget": b, "baseline": entry["oracle"]["baseline"]["accuracy"][i],
           "compute_optimal_oracle": entry["oracle"]["compute_optimal"]["accuracy"][i],
           "compute_optimal_predicted": entry["predicted"]["compute_optimal"]["accuracy"][i],
           "charged_budget": b + cost} for i, b in enumerate(entry["budgets"])]


def ratio_rows(settings: list[dict], bin_kind: str) -> tuple[int, list[dict]]:
  largest = max(s["n"] for s in settings)
  return largest, [{"bin": b, "chains": s["chains"], "chain_length": s["chain_length"],
                    "ratio": s["chain_length"] / s["chains"], "accuracy": a}
                   for s in settings if s["n"] == largest
                   for b, a in s[f"{bin_kind}_bins"].items()]


def flops_rows(flops: dict) -> list[dict]:
  return [{"family": family, "R": per["R"], "multiplier": per["multiplier"], "bin": b, **v}
          for family, rows in flops["families"].items() for per in rows.values()
          for b, v in per["bins"].items()]


def summary_markdown(summary: dict, flops: dict) -> str:
  lines = ["# Findings of this run", "",
           f"Difficulty bins: {summary['bins']} (1 = easiest). Budgets in generations per "
           f"question; accuracies are 2-fold cross-validated. Difficulty estimation "
           f"({summary['difficulty_cost_generations']:g} generations per question) is "
           f"{'charged to' if summary['charge_difficulty'] else 'left out of'} the headline "
           "budgets (the paper leaves it out; select.charge_difficulty charges it).", "",
           "| finding | status | numbers |", "|---|---|---|"]
  for name, f in summary["findings"].items():
    lines.append(f"| {name} | **{f['status']}** | {f['statement']} |")
  lines += ["", "## Efficiency ratio (baseline budget / compute-optimal budget)", ""]
  for family, head in summary["efficiency_ratio"].items():
    lines.append(f"- {family}: up to {head['max']:.2f}x at {head['at_budget']} generations"
                 f"{' (lower bound)' if head['max_is_lower_bound'] else ''}, median "
                 f"{head['median']:.2f}x")
  lines += ["", "## FLOPs-matched: relative accuracy difference, small + test-time compute vs "
            "the 14x model (> 0: test-time compute wins)", ""]
  for family in [f for f in FAMILIES if f in flops["families"]]:
    for r, per in flops["families"][family].items():
      cells = ", ".join(
          f"bin {b}: " + ("n/a" if v["relative_difference"] is None else
                          f"{100 * v['relative_difference']:+.1f}%")
          + ("*" if v["where"] == "beyond_largest_run" else "") for b, v in per["bins"].items())
      lines.append(f"- {family}, R = {r} (small model may spend {per['multiplier']:.1f}x the "
                   f"14x model's inference tokens): {cells}")
  lines += ["", "\\* the matched budget exceeds the largest budget run: the small model's "
            "accuracy there is that of the largest run, a lower bound; n/a: the 14x model "
            "gets nothing right in that bin."]
  lines += ["", "## Figures (tables beside them as CSV)", ""]
  lines += [f"- `{name}`" for name in summary["figures"]]
  return "\n".join(lines) + "\n"


def run(ctx) -> dict:
  cfg = config_schema.build(ReportConfig, ctx.config.report, "report")
  selection = _read(ctx.workdir, "select", "selection.json")
  settings = _read(ctx.workdir, "select", "settings.json")
  flops = _read(ctx.workdir, "flops", "flops.json")
  directory = ctx.stage_dir("report")
  os.makedirs(directory, exist_ok=True)
  kind, cost = selection["bins"], selection["difficulty_cost_generations"]
  figures = []

  def figure(name, rows, draw, *args):
    if ctx.is_main:
      write_csv(os.path.join(directory, f"{name}.csv"), rows)
      draw(rows, *args, os.path.join(directory, f"{name}.png"), cfg.dpi)
    figures.append(f"{name}.png")

  families = [f for f in FAMILIES if f in selection["families"]]
  for family in families:
    entry = selection["families"][family]
    bins = sorted(entry[kind]["by_bin"], key=int)
    title = "Search methods" if family == "search" else "Revisions (P parallel chains)"
    figure(f"{family}_methods", method_rows(settings[family], kind), plots.methods_vs_budget,
           title, bins, kind)
    baseline = "best-of-N weighted" if family == "search" else "all-parallel revisions"
    figure(f"{family}_compute_optimal", compute_optimal_rows(entry, cost),
           plots.compute_optimal, family, baseline, cost)
  if "revisions" in settings:
    budget, rows = ratio_rows(settings["revisions"], kind)
    figure("revisions_ratio_by_bin", rows, plots.revision_ratio, budget, kind)
  figure("flops_matched", flops_rows(flops), plots.flops_matched, families)

  summary = {
      "bins": kind, "charge_difficulty": selection["charge_difficulty"],
      "difficulty_cost_generations": cost,
      "findings": findings.all_findings(selection, settings, flops),
      "efficiency_ratio": {f: selection["families"][f][kind]["efficiency_ratio"]
                           for f in families},
      "flops_matched": {f: {r: {b: v["relative_difference"] for b, v in per["bins"].items()}
                            for r, per in flops["families"][f].items()} for f in families},
      "figures": figures}
  if ctx.is_main:
    write_json_atomic(os.path.join(directory, "summary.json"), summary)
    write_lines_atomic(os.path.join(directory, "summary.md"), [summary_markdown(summary, flops)])
  return {name: f["status"] for name, f in summary["findings"].items()}
