"""The paper's claims as structured verdicts, and their paragraphs rendered from the verdicts.

Each claim function reads the rows of a phase and returns a `Verdict`: the claim's name, its
status, every number the decision used (`numbers`, plain data) and the rule that decided, as
text. `paragraph(verdict)` writes the report's paragraph from the verdict alone, so a test checks
the status and the numbers, not sentences, and the prose cannot say what the numbers do not.

    frontier_claim(frontier results)          the bits a construction needs grow like log n
    training_claims(sweep cell rows, N)       one verdict per low-precision arm
                                              (`experiments.training_verdict` decides)
    quant_claim(quant study rows, scheme)     int4 / QLoRA lose to fp32 / LoRA
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from arith_precision.common import markdown
from constructions.frontier import BF16_MANTISSA
from experiments import training_verdict as tv
from experiments.report import training
from experiments.report.quant import comparison

LEARNED = 0.5  # an fp32 model "learned" its task when its exact match reaches this
FRONTIER_CLAIM = "Bits a construction needs grow like log n"
QUANT_CLAIM = "int4 / QLoRA lose to fp32 / LoRA"
TRAINING_CLAIM = "{arm} training hurts IterADD / MUL, not ADD ({protocol} protocol)"

FRONTIER_RULE = ("shown: in every task the threshold never falls as n grows and ends above where "
                 "it starts; partly shown: in some tasks; not shown: in none")
QUANT_RULE = (f"among the fp32 models with exact match >= {LEARNED}: int4 below fp32 when the "
              "largest fp32 - int4 gap exceeds 0.05, else int4 matches fp32 (not tested when "
              f"none reaches {LEARNED}); after fine-tuning: QLoRA below LoRA when LoRA leads by "
              f"more than 0.05 anywhere, else QLoRA matches LoRA (not tested when neither arm "
              f"reaches {LEARNED}); a gap widens with n when its mean over the runs at the "
              "largest n exceeds its mean at the smallest n by more than 0.02")


@dataclasses.dataclass(frozen=True)
class Verdict:
    """A claim decided by a stated rule: `status` (e.g. "shown", "not shown", "not run"), the
    `numbers` it was decided on (plain data, JSON-able) and the `rule` text."""

    claim: str
    status: str
    numbers: Mapping[str, Any]
    rule: str


def paragraph(v: Verdict) -> str:
    """The report's paragraph for a verdict, written from the verdict alone."""
    if v.claim == FRONTIER_CLAIM:
        return _frontier_paragraph(v)
    if v.claim == QUANT_CLAIM:
        return _quant_paragraph(v)
    return _training_paragraph(v)


# ---- the constructions' frontier ---------------------------------------------------------------


def frontier_claim(results: Sequence[dict]) -> Verdict:
    """'The bits a construction needs grow like log n', from the frontier phase's results.

    numbers: `tasks` [{label, accumulation, bits: [[n, M or None], ...], fit: [slope,
    intercept] or None}], `grew` / `flat` (task counts), `bf16_fails` [{label, from_n}],
    `max_mantissa` (None in bits means more than it).
    """
    from constructions import frontier

    tasks, grew, flat, bf16_fails = [], 0, 0, []
    for r in results:
        acc = r["accumulations"][0]
        pts = [[e["n"], e["float_mantissa_bits"][acc]] for e in r["entries"]]
        known = [(n, m) for n, m in pts if m is not None]
        if len(known) >= 2 and known[-1][1] > known[0][1] and all(
                b[1] >= a[1] for a, b in zip(known, known[1:], strict=False)):
            grew += 1
        elif len(known) >= 2:
            flat += 1
        failing = [n for n, m in pts if m is None or m > BF16_MANTISSA]
        if failing:
            bf16_fails.append({"label": r["label"], "from_n": min(failing)})
        fit = r["fits"].get(acc)
        tasks.append({"label": r["label"], "accumulation": acc, "bits": pts,
                      "fit": list(fit) if fit else None})
    status = ("not run" if not results else "shown" if grew == len(results)
              else "partly shown" if grew else "not shown")
    return Verdict(FRONTIER_CLAIM, status,
                   {"tasks": tasks, "grew": grew, "flat": flat, "bf16_fails": bf16_fails,
                    "max_mantissa": frontier.MAX_MANTISSA}, FRONTIER_RULE)


FRONTIER_TEXT = (
    "Claim (positive results): with logarithmic precision a constant-size Transformer does ADD, "
    "IterADD and MUL, so the bits a construction needs grow like log n (and any fixed format "
    "fails past some n). This run measured the fewest float mantissa bits (8 exponent bits) at "
    "which each hand-built construction is exact on its whole verification set: {tasks}. ")
FRONTIER_GREW = ("In every task the bits grow with n, by about the fitted amount per doubling, "
                 "i.e. like log n, as the theory says. ")
FRONTIER_FLAT = ("The bits grew monotonically with n in {grew} of {total} tasks; in {flat} they "
                 "did not grow over the n tested (too small a range of n to see the log n growth "
                 "there). ")
FRONTIER_BF16_FAILS = ("bf16 (e8m{bits}, {bits} mantissa bits) is no longer enough for {fails}: a "
                       "fixed format breaks the constructions once n is large enough. ")
FRONTIER_BF16_HOLDS = "bf16 (e8m{bits}) was still exact at every n tested here. "
FRONTIER_CAVEAT = ("This is exactness on the checked inputs (exhaustive for small n, adversarial "
                   "carry chains plus random inputs otherwise), not a proof for all inputs.")


def _frontier_paragraph(v: Verdict) -> str:
    if v.status == "not run":
        return "The frontier phase has not run."
    x, top = v.numbers, v.numbers["max_mantissa"]
    tasks = "; ".join(
        f"{t['label']} (accumulation `{t['accumulation']}`): "
        + ", ".join(f"{m if m is not None else f'>{top}'} at n={n}" for n, m in t["bits"])
        + (f"; fitted {t['fit'][0]:.2f} bits per doubling of n" if t["fit"] else "")
        for t in x["tasks"])
    text = FRONTIER_TEXT.format(tasks=tasks)
    text += (FRONTIER_GREW if v.status == "shown" else
             FRONTIER_FLAT.format(grew=x["grew"], total=len(x["tasks"]), flat=x["flat"]))
    fails = ", ".join(f"{f['label']} from n={f['from_n']}" for f in x["bf16_fails"])
    text += FRONTIER_BF16_FAILS.format(fails=fails, bits=BF16_MANTISSA) if fails else \
        FRONTIER_BF16_HOLDS.format(bits=BF16_MANTISSA)
    return text + FRONTIER_CAVEAT


# ---- training from scratch ---------------------------------------------------------------------


def training_claims(cells: Sequence[Mapping], num_examples: int | None = None) -> list[Verdict]:
    """One verdict per low-precision arm present (pure_bf16, bf16) against fp32, under each
    test protocol (iid first: the paper's).

    numbers: `experiments.training_verdict.verdict`'s dict (arm, protocol, thresholds,
    collapses, matches, control, excluded, failed) and, for the notes, `num_examples` and `seeds`
    (the fewest fp32 seeds of a point).
    """
    out = []
    for protocol in tv.PROTOCOLS:
        pts = tv.points(cells, protocol)
        for arm in ("pure_bf16", "bf16"):
            if not any(c["precision"] == arm for c in cells):
                continue
            v = dict(tv.verdict(cells, arm, protocol=protocol))
            status, rule = v.pop("status"), v.pop("rule")
            v["num_examples"] = num_examples
            v["seeds"] = min((len(p["exact_match"].get("fp32", {})) for p in pts), default=0)
            out.append(Verdict(TRAINING_CLAIM.format(arm=arm, protocol=protocol), status, v,
                               rule))
    return out


TRAINING_ONE_SEED = ("One seed per cell: differences of about 0.1 are within run-to-run noise "
                     "(the binomial standard error alone is up to {stderr:.3f} at {num_examples} "
                     "examples). ")


def _training_paragraph(v: Verdict) -> str:
    x = v.numbers
    text = training.render(dict(x, status=v.status, rule=v.rule))
    if x["seeds"] <= 1 and x["num_examples"]:
        text += TRAINING_ONE_SEED.format(stderr=0.5 / math.sqrt(x["num_examples"]),
                                         num_examples=x["num_examples"])
    return text


# ---- quantization ------------------------------------------------------------------------------


TASK_NAMES = {"add": "ADD", "iter_add": "IterADD", "mul": "MUL"}


def _task_name(task: str, base) -> str:
    return f"{TASK_NAMES[task]} base {base}"


def quant_claim(rows: Sequence[Mapping], qlora_scheme: str = "int4") -> Verdict:
    """'int4 / QLoRA lose to fp32 / LoRA, more so at larger n', from the quant study's rows.

    numbers: `scheme`, `runs` [{task, base, n, fp32, quant}] (post-training, sorted), `learned`
    (how many fp32 models reached LEARNED), `worst` {task, n, gap} (largest fp32 - scheme gap
    among those), `trends` [{task, first: [n, gap], last: [n, gap], runs, widens}] (gaps
    averaged over the runs at each n; only tasks learned at two or more distinct n), `finetune`
    {steps, runs: `comparison` rows} or None, `findings` (the parts of the status).
    """
    x: dict[str, Any] = {"scheme": qlora_scheme, "learned_min": LEARNED, "runs": [],
                         "learned": 0, "worst": None, "trends": [], "finetune": None,
                         "findings": []}
    if not rows:
        return Verdict(QUANT_CLAIM, "not run", x, QUANT_RULE)
    ptq = collections.defaultdict(dict)
    for r in rows:
        if r["stage"] == "ptq":
            ptq[r["run"]][r["scheme"]] = r
    per_run = sorted((d["fp32"]["task"], int(d["fp32"]["base"]), int(d["fp32"]["n"]),
                      d["fp32"]["exact_match"], d[qlora_scheme]["exact_match"], name)
                     for name, d in ptq.items() if "fp32" in d and qlora_scheme in d)
    x["runs"] = [dict(task=t, base=b, n=n, fp32=f, quant=q) for t, b, n, f, q, _ in per_run]
    learned = [r for r in x["runs"] if r["fp32"] >= LEARNED]
    x["learned"] = len(learned)
    findings = x["findings"]
    if not learned:
        findings.append("not tested")
    else:
        gaps = [(r["n"], r["fp32"] - r["quant"], r["task"]) for r in learned]
        n, gap, task = max(gaps, key=lambda g: g[1])
        x["worst"] = {"task": task, "n": n, "gap": gap}
        findings.append("int4 below fp32" if gap > 0.05 else "int4 matches fp32")
        # A trend compares lengths, not seeds: runs at the same n (other seeds) are averaged
        # first, and a task needs two distinct n to have one.
        by_task_n = collections.defaultdict(lambda: collections.defaultdict(list))
        for n, g, t in gaps:
            by_task_n[t][n].append(g)
        for t, per_n in by_task_n.items():
            pts = sorted((n, sum(gs) / len(gs)) for n, gs in per_n.items())
            if len(pts) >= 2:
                x["trends"].append({"task": t, "first": list(pts[0]), "last": list(pts[-1]),
                                    "runs": sum(len(gs) for gs in per_n.values()),
                                    "widens": pts[-1][1] > pts[0][1] + 0.02})
    comp = comparison(rows, qlora_scheme)
    if comp:
        x["finetune"] = {"steps": comp[0]["steps"], "runs": comp}
        diffs = [c["lora"] - c["qlora"] for c in comp]
        if max(max(c["lora"], c["qlora"]) for c in comp) < LEARNED:
            findings.append("LoRA vs QLoRA not tested")
        elif max(diffs) > 0.05:
            findings.append("QLoRA below LoRA")
        else:
            findings.append("QLoRA matches LoRA")
    return Verdict(QUANT_CLAIM, ", ".join(findings) or "not shown", x, QUANT_RULE)


QUANT_TEXT = ("Claim (LLM study): int4 weights lose to bf16, and QLoRA (LoRA on a frozen int4 "
              "base) to LoRA, the gap widening with the number of digits. Post-training "
              "quantization of this run's fp32 models ({runs}). ")
QUANT_FINDINGS = {
    "not tested": ("No fp32 model reached exact match {learned_min}, so there is little "
                   "accuracy for quantization to lose: not tested. "),
    "int4 below fp32": ("{scheme} loses up to {gap:.3f} exact match (at {task} n={n}) on the "
                        "models that learned their task. "),
    "int4 matches fp32": ("{scheme} stays within {gap:+.3f} of fp32 on every model that learned "
                          "its task: these small models are robust to it. "),
    "LoRA vs QLoRA not tested": ("Neither arm reached exact match {learned_min} on any task: the "
                                 "fine-tuning comparison is not informative at this budget. "),
    "QLoRA below LoRA": "LoRA ends ahead of QLoRA by up to {lead:.3f}, as in the paper. ",
    "QLoRA matches LoRA": ("LoRA and QLoRA end within {spread:.3f} of each other: no QLoRA "
                           "deficit at this size and budget. "),
}
QUANT_TREND = ("On {task} the fp32 - {scheme} gap {trend} with n ({first:+.3f} at n={first_n}, "
               "{last:+.3f} at n={last_n}; mean over the runs at each n). ")
QUANT_FINETUNE = "After {steps} fine-tuning steps: {items}. "


def _quant_paragraph(v: Verdict) -> str:
    x = v.numbers
    if v.status == "not run":
        return "The quantization study has not run."
    f, q = markdown.number, x["scheme"]
    runs = "; ".join(f"{_task_name(r['task'], r['base'])} n={r['n']}: fp32 {f(r['fp32'])}, "
                     f"{q} {f(r['quant'])}" for r in x["runs"])
    text = QUANT_TEXT.format(runs=runs)
    worst = x["worst"] or {}
    fmt = dict(scheme=q, learned_min=x["learned_min"], gap=worst.get("gap"),
               task=worst.get("task"), n=worst.get("n"))
    findings = list(x["findings"])
    if findings and findings[0] in ("not tested", "int4 below fp32", "int4 matches fp32"):
        text += QUANT_FINDINGS[findings.pop(0)].format(**fmt)
    for t in x["trends"]:
        text += QUANT_TREND.format(task=t["task"], scheme=q,
                                   trend="widens" if t["widens"] else "does not widen",
                                   first=t["first"][1], first_n=t["first"][0],
                                   last=t["last"][1], last_n=t["last"][0])
    if x["finetune"]:
        comp = x["finetune"]["runs"]
        items = "; ".join(f"{c['task']} n={c['n']}: LoRA {f(c['lora'])}, QLoRA {f(c['qlora'])}"
                          f" (before: fp32 {f(c['fp32'])}, {q} {f(c['quant'])})" for c in comp)
        text += QUANT_FINETUNE.format(steps=x["finetune"]["steps"], items=items)
        diffs = [c["lora"] - c["qlora"] for c in comp]
        for finding in findings:
            text += QUANT_FINDINGS[finding].format(
                **fmt, lead=max(diffs), spread=max(abs(d) for d in diffs))
    return text
