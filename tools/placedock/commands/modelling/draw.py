"""Draw a loaded scenario's provider trees with Graphviz: a box per provider
with its inventories (used / capacity), traits and aggregates; parent -> child
edges; a dashed edge from a sharing provider to each tree it shares with.
With a candidate, the providers it uses are filled and the amounts it takes
are shown. The state drawn is placement's (apply.live_state).
"""

import html
import shutil
import subprocess

from placedock.commands.modelling.spec import SHARING_TRAIT, ScenarioError, capacity

USED = "#fde2a7"  # fill of the providers a highlighted candidate uses
HEADER = "#dbe7f3"
SHARING = "#e3f1df"


def _q(text):
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _small(content):
    return f'<TR><TD COLSPAN="2" ALIGN="LEFT" BALIGN="LEFT"><FONT POINT-SIZE="9">{content}</FONT></TD></TR>'


def _label(name, rp, taken):
    e = html.escape
    fill = USED if taken is not None else (SHARING if SHARING_TRAIT in rp["traits"] else HEADER)
    rows = [f'<TR><TD COLSPAN="2" BGCOLOR="{fill}"><B>{e(name)}</B></TD></TR>']
    for rc, record in sorted(rp["inventories"].items()):
        used = rp["usages"].get(rc, 0)
        ratio = f" ×{record['allocation_ratio']:g}" if record["allocation_ratio"] != 1 else ""
        amount = f"{used} / {capacity(record)}{ratio}"
        if taken and rc in taken:
            amount += f' <FONT COLOR="#b35c00"><B>+{taken[rc]}</B></FONT>'
        rows.append(f'<TR><TD ALIGN="LEFT">{e(rc)}</TD><TD ALIGN="RIGHT">{amount}</TD></TR>')
    if rp["traits"]:
        rows.append(_small('<BR ALIGN="LEFT"/>'.join(map(e, rp["traits"])) + '<BR ALIGN="LEFT"/>'))
    if rp["aggregates"]:
        rows.append(_small(f"<I>aggregates: {e(', '.join(rp['aggregates']))}</I>"))
    return '<<TABLE BORDER="0" CELLBORDER="1" CELLSPACING="0" CELLPADDING="4">' + "".join(rows) + "</TABLE>>"


def dot(scenario, state, candidate=None, title=None):
    """The Graphviz source; `candidate` {name: {rc: n}} is highlighted."""
    candidate = candidate or {}
    lines = [
        f"digraph {_q(scenario.name)} {{",
        "  rankdir=TB; nodesep=0.4; ranksep=0.6;",
        '  node [shape=plain fontname="Helvetica" fontsize=11];',
        '  edge [color="#555555" arrowsize=0.7];',
        f'  labelloc=t; fontname="Helvetica"; label={_q(title or scenario.name)};',
    ]
    for name, rp in state.items():
        lines.append(f"  {_q(name)} [label={_label(name, rp, candidate.get(name))}];")
    for name, rp in state.items():
        if rp["parent"] is not None:
            lines.append(f"  {_q(rp['parent'])} -> {_q(name)};")
    roots = [n for n, rp in state.items() if rp["parent"] is None and SHARING_TRAIT not in rp["traits"]]
    for name, rp in state.items():
        if SHARING_TRAIT not in rp["traits"]:
            continue
        for root in roots:
            common = sorted(set(rp["aggregates"]) & set(state[root]["aggregates"]))
            if common:
                lines.append(
                    f'  {_q(name)} -> {_q(root)} [style=dashed dir=none color="#4a8a3a" '
                    f'label={_q("shares via " + ", ".join(common))} fontsize=9 fontname="Helvetica"];'
                )
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(source, stem):
    """Write STEM.dot, STEM.svg and STEM.png; the paths written."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = [stem.with_suffix(".dot")]
    written[0].write_text(source)
    if shutil.which("dot") is None:
        raise ScenarioError(f"wrote {written[0]}; SVG and PNG need Graphviz's `dot` (Debian: apt-get install graphviz)")
    for fmt in ("svg", "png"):
        out = stem.with_suffix(f".{fmt}")
        subprocess.run(
            ["dot", f"-T{fmt}", "-Gdpi=96" if fmt == "png" else "-Gdpi=72", "-o", str(out), str(written[0])], check=True
        )
        written.append(out)
    return written
