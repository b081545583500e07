"""`report` stage: figures, the tables behind them, and the findings summary.

Reads select/selection.json, select/settings.json and flops/flops.json; writes under
report/: one PNG and one CSV per figure, summary.json (findings, efficiency ratios,
FLOPs-matched differences per bin, the bin kinds side by side) and summary.md (the same
for a reader). Keys in WORKSPACE.md.
"""
import csv
import io
import os

from tts import config_schema
from tts.atomic_files import exists, make_dirs, read_json, write_json_atomic, write_lines_atomic
from tts.report import findings, plots
from tts.scaling.config import BIN_KINDS, ReportConfig

FAMILIES = ("search", "revisions")  # report order


def _read(workdir: str, stage: str, name: str) -> dict:
  path = os.path.join(workdir, stage, name)
  if not exists(path):
    raise FileNotFoundError(f"{path} not found; run the {stage} stage first")
  return read_json(path)


def _read_optional(workdir: str, stage: str, name: str) -> dict | None:
  """A stage's file that exists only in some configurations (none: the section is left out)."""
  path = os.path.join(workdir, stage, name)
  return read_json(path) if exists(path) else None


def write_csv(path: str, rows: list[dict]):
  out = io.StringIO()
  writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
  writer.writeheader()
  writer.writerows(rows)
  write_lines_atomic(path, [out.getvalue()])


def _with_ci(key: str, value: float, ci) -> dict:
  return {key: value, f"{key}_lo": ci[0], f"{key}_hi": ci[1]}


def method_rows(settings: list[dict], bin_kind: str) -> list[dict]:
  rows = []
  for s in settings:
    row = {"method": s["method"], "n": s["n"], "generations": s["generations"],
           **_with_ci("accuracy", s["accuracy"], s["accuracy_ci"]), "mean_flops": s["mean_flops"]}
    for b, a in s[f"{bin_kind}_bins"].items():
      row.update(_with_ci(f"bin_{b}", a, s[f"{bin_kind}_bins_ci"][b]))
    rows.append(row)
  return rows


def compute_optimal_rows(entry: dict, costs: dict) -> list[dict]:
  """Per budget: the baseline and compute-optimal under each bin kind, and each kind's
  budget with its difficulty estimation charged."""
  curve = lambda kind, which, i: (entry[kind][which]["accuracy"][i],
                                  entry[kind][which]["accuracy_ci"][i])
  rows = []
  for i, b in enumerate(entry["budgets"]):
    row = {"budget": b, **_with_ci("baseline", *curve(BIN_KINDS[0], "baseline", i))}
    for kind in BIN_KINDS:
      row.update(_with_ci(f"compute_optimal_{kind}", *curve(kind, "compute_optimal", i)))
      row[f"charged_budget_{kind}"] = b + costs[kind]
    rows.append(row)
  return rows


def ratio_rows(settings: list[dict], bin_kind: str) -> tuple[int, list[dict]]:
  largest = max(s["n"] for s in settings)
  return largest, [{"bin": b, "chains": s["chains"], "chain_length": s["chain_length"],
                    "ratio": s["chain_length"] / s["chains"],
                    **_with_ci("accuracy", a, s[f"{bin_kind}_bins_ci"][b])}
                   for s in settings if s["n"] == largest
                   for b, a in s[f"{bin_kind}_bins"].items()]


def flops_rows(flops: dict, bin_kind: str) -> list[dict]:
  return [{"family": family, "R": per["R"], "multiplier": per["multiplier"], "bin": b,
           "target_flops": v["target_flops"], "where": v["where"],
           "small_accuracy": v["small_accuracy"]["value"],
           "large_accuracy": v["large_accuracy"]["value"],
           **_with_ci("difference", v["absolute_difference"]["value"],
                      v["absolute_difference"]["ci"])}
          for family, kinds in flops["families"].items()
          for per in kinds[bin_kind]["matched"].values() for b, v in per["bins"].items()]


def tradeoff_rows(entry: dict) -> list[dict]:
  """The FLOPs trade-off figure's points: per group (all questions, each bin), the
  compute-optimal curve, the 14x model greedy and the matched point for each R."""
  rows = []
  for g, curve in entry["curves"].items():
    rows += [{"group": g, "series": "compute_optimal", "R": "", "flops": f, "where": "",
              **_with_ci("accuracy", a, ci)}
             for f, a, ci in zip(curve["flops"], curve["accuracy"], curve["accuracy_ci"])]
    large = entry["large"][g]
    rows.append({"group": g, "series": "large_greedy", "R": "", "flops": large["flops"],
                 "where": "", **_with_ci("accuracy", large["accuracy"]["value"],
                                         large["accuracy"]["ci"])})
    for per in entry["matched"].values():
      cell = per["all"] if g == "all" else per["bins"][g]
      rows.append({"group": g, "series": "matched", "R": per["R"],
                   "flops": cell["target_flops"], "where": cell["where"],
                   **_with_ci("accuracy", cell["small_accuracy"]["value"],
                              cell["small_accuracy"]["ci"])})
  return rows


def matched_summary(per: dict) -> dict:
  """One R's FLOPs-matched differences: absolute (all questions and per bin) and relative."""
  return {"all": per["all"]["absolute_difference"],
          "bins": {b: v["absolute_difference"] for b, v in per["bins"].items()},
          "relative": {b: v["relative_difference"] for b, v in per["bins"].items()}}


def budget_lines(per_family: dict) -> list[str]:
  """One line per family and bin kind: each budget's difference in accuracy points."""
  return [f"- {family}, {kind} bins: " + ", ".join(
      f"{b}: {_est(e, 100)}" for b, e in per_budget.items())
      for family, per_kind in per_family.items() for kind, per_budget in per_kind.items()]


def _est(e: dict | None, scale: float = 1.0, unit: str = "", digits: int = 1) -> str:
  if e is None:
    return "n/a"
  lo, hi = (scale * c for c in e["ci"])
  return f"{scale * e['value']:+.{digits}f}{unit} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


def without_samples(selection: dict, families: list[str]) -> dict:
  """Per bin kind: agreement with oracle bins, Spearman with pass@1, what estimating it
  costs, and the efficiency headline with that cost charged, per family."""
  return {k: {**quality, "efficiency_charged": {
      f: selection["families"][f][k]["efficiency_charged"]["headline"] for f in families}}
          for k, quality in selection["bin_kinds"].items()}


def _ratio(head: dict) -> str:
  if head["max"] is None:
    return "n/a"
  return f"{head['max']:.2f}x [{head['max_ci'][0]:.2f}, {head['max_ci'][1]:.2f}]"


def without_samples_markdown(table: dict) -> list[str]:
  families = list(next(iter(table.values()))["efficiency_charged"])
  lines = ["## Difficulty without samples: oracle, predicted and prompt bins", "",
           "Prompt bins: the verifier's reading after the prompt alone (no sample). "
           "Agreement: fraction of questions in the same bin as with oracle bins. Spearman: "
           "rank correlation of the bin score with pass@1. Efficiency: the headline (max) "
           "ratio with the estimation's generations charged to compute-optimal's budget; "
           "the FLOPs column is what the estimate costs per question (parameters and "
           "attention), which the FLOPs-matched comparison charges with "
           "select.charge_difficulty.", "",
           "| bins | score | generations / question | FLOPs / question | agreement with "
           "oracle | Spearman with pass@1 | " + " | ".join(
               f"{f} efficiency, charged" for f in families) + " |",
           "|---|---|---|---|---|---|" + "---|" * len(families)]
  for kind, row in table.items():
    lines.append(
        f"| {kind} | {row['score']} | {row['estimation_generations']:g} | "
        f"{row['estimation_flops']:.4g} | {_est(row['agreement_with_oracle'], digits=3)} | "
        f"{_est(row['rank_correlation'], digits=3)} | "
        + " | ".join(_ratio(row["efficiency_charged"][f]) for f in families) + " |")
  return lines + [""]


def verifiers_markdown(comparison: dict | None) -> list[str]:
  """Can the verifiers find right answers? The search stage's checks on best-of-N samples:
  the ordering the method needs (process-verifier-weighted > majority > one sample) and each
  verifier's within-question AUROC (0.5: it cannot tell a question's right answers from its
  wrong ones)."""
  if not comparison or "checks" not in comparison:
    return []
  kinds = comparison.get("verifier_kinds", {})
  cell = lambda e: ("n/a" if e["value"] is None
                    else f"{e['value']:+.3f} [{e['ci'][0]:+.3f}, {e['ci'][1]:+.3f}]")
  lines = ["## Verifiers on best-of-N samples (can they find right answers?)", "",
           "Accuracy of each answer rule over the same N samples per question, the ordering "
           "the method needs as differences, and within-question AUROC: the chance that a "
           "right candidate outscores a wrong one of the same question (0.5: no better than "
           "chance; questions with both kinds only). Rows name the verifiers under "
           "search.verifiers (" + ", ".join(f"{v}: {k}" for v, k in kinds.items())
           + f"); the ordering is checked for {comparison['prm_verifier']!r}, the process "
           f"verifier of best-of-N method {comparison['prm_method']!r}.", ""]
  for n, check in comparison["checks"].items():
    lines += [f"At N = {n} ({check['questions']} questions):", "",
              "| | value [95% interval] |", "|---|---|"]
    lines += [f"| accuracy, {k} | {cell(e)} |" for k, e in check["accuracy"].items()]
    lines += [f"| {k} | {cell(e)} |" for k, e in check["differences"].items()]
    lines += [f"| within-question AUROC, {k} ({e['questions']} questions) | {cell(e)} |"
              for k, e in check["within_question_auroc"].items()]
    lines.append("")
  return lines


def summary_markdown(summary: dict, flops: dict) -> str:
  boot = summary["bootstrap"]
  lines = ["# Findings of this run", "",
           f"Difficulty bins 1 (easiest) to {len(summary['bin_names'])}; headline bins: "
           f"{summary['bins']}. Budgets in generations per question. Every accuracy is 2-fold "
           "cross-validated (the setting measured on a question was chosen on the other fold "
           f"of its bin). Brackets: 95% intervals of a paired bootstrap over questions "
           f"({boot['resamples']} resamples, seed {boot['seed']}). Difficulty estimation ("
           + ", ".join(f"{kind} bins {cost:g}" for kind, cost in
                       summary["difficulty_cost_generations"].items())
           + " generations per question) is "
           f"{'charged to' if summary['charge_difficulty'] else 'left out of'} the headline "
           "budgets (the paper leaves it out; select.charge_difficulty charges it). The "
           "compute-optimal menu is the paper's: PRM-scored best-of-N, beam search and "
           "lookahead (for revisions, every sequential/parallel split); the extended menu adds "
           "the other candidates (ORM, DVTS, other verifiers) and is reported apart.", "",
           "| finding | " + " | ".join(f"{k} bins" for k in summary["findings"]) + " |",
           "|---|" + "---|" * len(summary["findings"])]
  kinds = list(summary["findings"])
  for name in summary["findings"][kinds[0]]:
    lines.append(f"| {name} | " + " | ".join(f"**{summary['findings'][k][name]['status']}**"
                                             for k in kinds) + " |")
  for kind in kinds:
    lines += ["", f"### Verdicts with {kind} bins", ""]
    lines += [f"- **{name}: {f['status']}.** {f['statement']}"
              for name, f in summary["findings"][kind].items()]
  lines += [""] + without_samples_markdown(summary["difficulty_without_samples"])
  lines += verifiers_markdown(summary["verifiers"])
  lines += ["## Efficiency ratio (baseline budget / compute-optimal budget, "
            "cross-validated)", ""]
  for family, per_kind in summary["efficiency_ratio"].items():
    for kind, head in per_kind.items():
      lines.append(f"- {family}, {kind} bins, paper menu: {findings.headline_text(head)}")
      extended = summary["extended_efficiency_ratio"].get(family, {}).get(kind)
      if extended:
        lines.append(f"- {family}, {kind} bins, extended menu: {findings.headline_text(extended)}")
  lines += ["", "## Compute-optimal minus baseline at equal budget (accuracy points, "
            "cross-validated)", ""]
  lines += budget_lines(summary["compute_optimal_minus_baseline"])
  lines += ["", "## Adapting to difficulty: compute-optimal minus the best fixed setting per "
            "budget (accuracy points, cross-validated on the same folds)", "",
            "The ratio over the baseline counts two gains: a better method than the baseline, "
            "and a different one per difficulty bin. One setting per budget for every question "
            "has the first only; this is the second.", ""]
  lines += budget_lines(summary["adaptive_minus_fixed"])
  kind = summary["bins"]
  lines += ["", f"## FLOPs-matched: small + test-time compute minus the 14x model, accuracy "
            f"points ({kind} bins, cross-validated; > 0: test-time compute wins)", ""]
  for family in [f for f in FAMILIES if f in flops["families"]]:
    matched = flops["families"][family][kind]["matched"]
    names = sorted(next(iter(matched.values()))["bins"], key=int)
    lines += [f"{family}:", "", "| R | may spend (x the 14x model's inference FLOPs) | all | "
              + " | ".join(f"bin {b}" for b in names) + " |",
              "|---|---|---|" + "---|" * len(names)]
    for r, per in matched.items():
      cells = [per["all"]] + [per["bins"][b] for b in names]
      lines.append(f"| {r} | {per['all']['flops_ratio']:.1f}x | " + " | ".join(
          _est(c["absolute_difference"], 100) + ("*" if c["where"] == "beyond_largest_run"
                                                 else "") for c in cells) + " |")
    lines.append("")
  lines += ["\\* the matched budget exceeds the largest budget run: the small model's "
            "accuracy there is that of the largest run, a lower bound. Relative differences "
            "are in report/summary.json.", "", "## Figures (tables beside them as CSV)", ""]
  lines += [f"![{name}]({name})" for name in summary["figures"]]
  return "\n".join(lines) + "\n"


def by_budget(selection: dict, families: list[str], key: str) -> dict:
  """A per-budget difference of selection.json ({value: [K], ci: [K]}) as {family: {kind:
  {budget: {value, ci}}}}."""
  out = {}
  for f in families:
    entry = selection["families"][f]
    out[f] = {k: {str(b): {"value": v, "ci": ci} for b, v, ci in zip(
        entry["budgets"], entry[k][key]["value"], entry[k][key]["ci"])} for k in BIN_KINDS}
  return out


def run(ctx) -> dict:
  cfg = config_schema.build(ReportConfig, ctx.config.report, "report")
  selection = _read(ctx.workdir, "select", "selection.json")
  settings = _read(ctx.workdir, "select", "settings.json")
  flops = _read(ctx.workdir, "flops", "flops.json")
  directory = ctx.stage_dir("report")
  make_dirs(directory)
  kind, costs = selection["bins"], selection["difficulty_cost_generations"]
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
    figure(f"{family}_compute_optimal", compute_optimal_rows(entry, costs),
           plots.compute_optimal, family, baseline, costs)
    figure(f"{family}_flops_tradeoff", tradeoff_rows(flops["families"][family][kind]),
           plots.flops_tradeoff, family, kind)
  if "revisions" in settings:
    budget, rows = ratio_rows(settings["revisions"], kind)
    figure("revisions_ratio_by_bin", rows, plots.revision_ratio, budget, kind)
  figure("flops_matched", flops_rows(flops, kind), plots.flops_matched, families)

  summary = {
      "bins": kind, "bin_names": bins, "charge_difficulty": selection["charge_difficulty"],
      "difficulty_cost_generations": costs, "bootstrap": selection["bootstrap"],
      "difficulty_without_samples": without_samples(selection, families),
      "verifiers": _read_optional(ctx.workdir, "search", "verifier_comparison.json"),
      "findings": {k: findings.all_findings(selection, flops, k) for k in BIN_KINDS},
      "efficiency_ratio": {f: {k: selection["families"][f][k]["efficiency_ratio"]
                               for k in BIN_KINDS} for f in families},
      "compute_optimal_minus_baseline": by_budget(selection, families, "difference"),
      "adaptive_minus_fixed": by_budget(selection, families, "adaptive_minus_fixed"),
      "extended_efficiency_ratio": {
          f: {k: selection["families"][f]["extended"][k]["efficiency_ratio"]
              for k in BIN_KINDS} for f in families if "extended" in selection["families"][f]},
      "flops_matched": {f: {k: {r: matched_summary(per)
                                for r, per in flops["families"][f][k]["matched"].items()}
                            for k in BIN_KINDS} for f in families},
      "figures": figures}
  if ctx.is_main:
    write_json_atomic(os.path.join(directory, "summary.json"), summary)
    write_lines_atomic(os.path.join(directory, "summary.md"), [summary_markdown(summary, flops)])
  return {k: {name: f["status"] for name, f in per.items()}
          for k, per in summary["findings"].items()}
