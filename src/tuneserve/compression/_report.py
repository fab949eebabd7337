"""The search's HTML report: every variant in a table, and accuracy against latency with
the Pareto front and the chosen variant marked."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from ._measure import Measurement

if TYPE_CHECKING:
    from ._search import CompressionResult

NOTES = (
    "Latency is the median of repeated calls through tuneserve's runtime (preprocessing and "
    "ONNX Runtime on this machine's CPU), one input per call and 32 per call.",
    "Unstructured sparsity (sparse) zeroes weights but keeps the dense graph: it shrinks the "
    "gzipped file (gzip MB), not the latency on ONNX Runtime's CPU provider.",
    "FP16 is meant for GPU execution providers; on the CPU provider it runs with casts and is "
    "rarely faster.",
    "The drop interval is a paired bootstrap: the original and the variant scored on the same "
    "resampled rows.",
)


def _interval(low: float | None, high: float | None, scale: float = 1.0) -> str:
    if low is None or high is None:
        return ""
    return f" [{scale * low:.2f}, {scale * high:.2f}]"


def what_it_did(m: Measurement) -> str:
    """What the variant's methods recorded, in a few words: nodes left in float, sparsity
    reached, weights kept, the new sequence length."""
    d = m.details
    said = []
    if d.get("excluded_nodes"):
        said.append("float: " + ", ".join(map(str, d["excluded_nodes"])))
    if isinstance(d.get("sparsity"), int | float):
        said.append(f"sparsity {d['sparsity']:.2f} (gzip only)")
    if isinstance(d.get("parameters_kept"), int | float):
        said.append(f"{100 * d['parameters_kept']:.0f}% of weights kept")
    if d.get("max_length"):
        said.append(f"max {d['max_length']} tokens")
    if d.get("blocks_kept"):
        said.append("blocks " + ",".join(map(str, d["blocks_kept"])))
    return "; ".join(said)


def status(m: Measurement, result: CompressionResult) -> str:
    """``chosen``, ``within budget``, or the rules the variant breaks."""
    if result.chosen is not None and result.chosen.name == m.name:
        return "chosen"
    broken = result.limits.get(m.name, [])
    if broken:
        return "; ".join(broken)
    return "" if m.name == "original" else "within budget"


#: Narrower consoles (and output that is not a terminal: rich assumes 80 columns) get
#: one line per variant instead of a table whose columns would be cut.
TABLE_WIDTH = 120


def print_trade_off(console: Any, result: CompressionResult) -> None:
    """The variants as a terminal table (rich), or one line each on a narrow console; then
    notes, what does not apply and what failed."""
    everything = [result.original, *result.variants]
    if console.width >= TABLE_WIDTH:
        from rich.table import Table

        table = Table("variant", result.original.metric, "drop (points)", "MB", "ms @1")
        for column in ("ms @32", "front", "status", "what it did"):
            table.add_column(column)
        for m in everything:
            table.add_row(
                m.name,
                f"{m.value:.4f}",
                f"{100 * m.drop:+.2f}",
                f"{m.size_mb:.3f}",
                f"{m.latency_ms:.2f}",
                f"{m.batch_latency_ms:.2f}",
                "*" if m.name in result.front else "",
                status(m, result),
                what_it_did(m),
            )
        console.print(table)
    else:
        width = max(24, *(len(m.name) + 2 for m in everything))
        console.print(
            f"{'variant (* on the front)':<{width}} {result.original.metric:>8} "
            f"{'drop':>7} {'MB':>8} {'ms @1':>7} {'ms @32':>8}  status",
            soft_wrap=True,
        )
        for m in everything:
            name = m.name + (" *" if m.name in result.front else "")
            done = what_it_did(m)
            console.print(
                f"{name:<{width}} {m.value:>8.4f} {100 * m.drop:>+7.2f} {m.size_mb:>8.3f} "
                f"{m.latency_ms:>7.2f} {m.batch_latency_ms:>8.2f}  {status(m, result)}"
                + (f" ({done})" if done else ""),
                soft_wrap=True,
                highlight=False,
            )
    for note in result.notes:
        console.print(f"note: {note}", soft_wrap=True)
    for method, reason in result.not_applicable.items():
        console.print(f"not applicable: {method}: {reason}", soft_wrap=True)
    for name, error in result.failed.items():
        console.print(f"failed: {name}: {error}", soft_wrap=True)
    console.print(f"report: {result.report}", soft_wrap=True)


def _row(m: Measurement, result: CompressionResult) -> str:
    chosen = result.chosen is not None and result.chosen.name == m.name
    cells = [
        f"<b>{html.escape(m.name)}</b>" if chosen else html.escape(m.name),
        f"{m.value:.4f}{_interval(m.low, m.high)}",
        f"{100 * m.drop:+.2f}{_interval(m.drop_low, m.drop_high, 100)}",
        "" if m.agreement is None else f"{100 * m.agreement:.1f}%",
        f"{m.size_mb:.3f}",
        f"{m.gzip_mb:.3f}",
        f"{m.latency_ms:.2f}",
        f"{m.latency_p90_ms:.2f}",
        f"{m.batch_latency_ms:.2f}",
        f"{m.items_per_s:.0f}",
        f"{m.parameters:,}",
        "yes" if m.name in result.front else "",
        html.escape(status(m, result)),
        html.escape(what_it_did(m)),
    ]
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def _table(result: CompressionResult) -> str:
    metric = result.original.metric
    head = [
        "variant",
        f"{metric} [95%]",
        "drop, points [95%]",
        "agrees",
        "size MB",
        "gzip MB",
        "ms @1",
        "p90 ms @1",
        "ms @32",
        "items/s @32",
        "weights",
        "front",
        "rules broken / status",
        "what it did",
    ]
    rows = "".join(_row(m, result) for m in [result.original, *result.variants])
    return "<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + f"</tr>{rows}</table>"


def _plot(result: CompressionResult) -> str:
    from tuneserve.evaluation import plot_image, pyplot

    plt = pyplot()
    everything = [result.original, *result.variants]
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.scatter([m.latency_ms for m in everything], [m.value for m in everything], color="#888")
    for m in everything:
        ax.annotate(
            m.name, (m.latency_ms, m.value), fontsize=7, xytext=(3, 3), textcoords="offset points"
        )
    on_front = [m for m in everything if m.name in result.front]
    ax.scatter(
        [m.latency_ms for m in on_front],
        [m.value for m in on_front],
        color="tab:blue",
        label="Pareto front (accuracy, latency, size)",
        zorder=3,
    )
    # in this plane: the best accuracy reached at each latency, as a step line
    steps, best = [], float("-inf")
    for m in sorted(everything, key=lambda m: (m.latency_ms, -m.value)):
        if m.value > best:
            best = m.value
            steps.append(m)
    right = max(m.latency_ms for m in everything)
    ax.step(
        [m.latency_ms for m in steps] + [right],
        [m.value for m in steps] + [best],
        where="post",
        color="tab:blue",
        linewidth=1,
        label="best accuracy at this latency or less",
    )
    floor = result.original.value - result.budget.max_accuracy_drop
    ax.axhline(floor, color="tab:red", linestyle="--", linewidth=1, label="accuracy budget")
    if result.budget.latency_ms is not None:
        ax.axvline(
            result.budget.latency_ms,
            color="tab:orange",
            linestyle="--",
            linewidth=1,
            label="latency limit",
        )
    if result.chosen is not None:
        ax.scatter(
            [result.chosen.latency_ms],
            [result.chosen.value],
            marker="*",
            s=250,
            color="gold",
            edgecolor="black",
            zorder=5,
            label="chosen",
        )
    ax.set_xlabel("latency at batch 1, ms (median)")
    ax.set_ylabel(result.original.metric + " on the held-out rows")
    ax.set_title("accuracy against latency")
    ax.legend(fontsize=8)
    return plot_image(fig)


def _listing(title: str, items: dict[str, str]) -> str:
    if not items:
        return ""
    rows = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in items.items())
    return f"<h2>{html.escape(title)}</h2><ul>{rows}</ul>"


def compression_report(result: CompressionResult) -> str:
    """The search as a self-contained HTML page."""
    from tuneserve.evaluation import html_page

    b = result.budget
    rules = [f"{result.original.metric} drop at most {100 * b.max_accuracy_drop:g} points"]
    if b.latency_ms is not None:
        rules.append(f"latency at batch 1 at most {b.latency_ms:g} ms")
    if b.size_mb is not None:
        rules.append(f"size at most {b.size_mb:g} MB")
    verdict = "Chosen" if result.chosen is not None else "Nothing chosen"
    body = (
        f"<p><b>{verdict}:</b> {html.escape(result.why)}</p>"
        f"<p>Rules: {html.escape('; '.join(rules))}; most compressed means "
        f"{html.escape(b.prefer)}. Scored on {result.scored} rows: "
        f"{html.escape(result.rows)}.</p>"
        + _plot(result)
        + _table(result)
        + "".join(f"<p>Note: {html.escape(n)}</p>" for n in result.notes)
        + _listing("Methods that do not apply", result.not_applicable)
        + _listing("Variants that failed", result.failed)
        + "<h2>Notes</h2><ul>"
        + "".join(f"<li>{html.escape(n)}</li>" for n in NOTES)
        + "</ul>"
    )
    return html_page(f"Compression of {result.name}", body)
