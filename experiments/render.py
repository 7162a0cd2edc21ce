"""The pieces `litlab report` (one run or sweep) and its comparison of runs share: learning curves read from
`metrics.csv` and overlaid, and the HTML table, image and style of the self-contained pages."""

from __future__ import annotations

import base64
import csv
import html
import io
from pathlib import Path

from callbacks.analysis.figures import plt

CURVES = ("train/loss", "val/loss", "val/acc")
CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}tr.best{background:#fff4c2;font-weight:bold}
img{max-width:100%;border:1px solid #eee}pre{background:#f7f7f7;padding:1em;overflow:auto;font-size:85%}
figure{display:inline-block;margin:.5em;vertical-align:top}figcaption{font-size:85%;color:#555}"""


def read_curves(run: Path) -> dict[str, list[tuple[int, float]]]:
    """Per metric, (epoch, value) from the CSV logger's metrics.csv (train and val rows are separate lines)."""
    path = run / "metrics.csv"
    curves: dict[str, list[tuple[int, float]]] = {k: [] for k in CURVES}
    if not path.is_file():
        return curves
    for row in csv.DictReader(path.open()):
        for k in CURVES:
            if row.get(k) not in (None, "") and row.get("epoch") not in (None, ""):
                curves[k].append((int(float(row["epoch"])), float(row[k])))
    return curves


def plot_curves(groups: dict[str, list[Path]]) -> bytes | None:
    """One panel per metric; one colour per point, one thin line per seed. PNG bytes, None without data."""
    fig, axes = plt.subplots(1, len(CURVES), figsize=(5 * len(CURVES), 3.8))
    drawn = False
    try:
        for colour, (label, runs) in enumerate(groups.items()):
            for j, run in enumerate(runs):
                curves = read_curves(run)
                for ax, key in zip(axes, CURVES):
                    if curves[key]:
                        x, y = zip(*curves[key])
                        # A 1-epoch run has one point per metric: a line through it draws nothing, so mark it.
                        ax.plot(x, y, color=f"C{colour % 10}", lw=1.2, alpha=0.8, label=label if j == 0 else None,
                                marker="o" if len(x) == 1 else None, markersize=5)
                        drawn = True
        if not drawn:
            return None
        for ax, key in zip(axes, CURVES):
            ax.set(title=key, xlabel="epoch")
            ax.grid(alpha=0.3)
        axes[-1].legend(fontsize=7, loc="lower right")
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        return buf.getvalue()
    finally:
        plt.close(fig)


def html_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
    for r in rows:
        best = any("★" in str(c) for c in r)
        cells = "".join(f"<td>{html.escape(str(c).replace('**', ''))}</td>" for c in r)
        out.append(f'<tr{" class=best" if best else ""}>{cells}</tr>')
    return "\n".join(out + ["</table>"])


def img_tag(data: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'
