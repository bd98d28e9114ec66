"""A self-contained HTML report of a comparison: images inline (data URIs), no script or style
from elsewhere, so it opens from file:// with no server and no network.

The page: the grids with their labels (settings of each image on hover, click to enlarge, arrow
keys to step through, Esc to close); below, two pickers (A and B) feeding a slider view (B under
A, the divider where the slider is), an A/B toggle (button or `t`) and a difference overlay.
"""

from __future__ import annotations

import base64
import html
import io
import json
from typing import Any

from llmdit_cli.compare import images
from llmdit_cli.compare.runs import Entry

STYLE = """
body { font: 14px system-ui, sans-serif; margin: 16px; color: #222; }
table.grid { border-collapse: collapse; margin-bottom: 24px; }
table.grid th { font-weight: 600; padding: 4px 8px; text-align: center; }
table.grid th.row { text-align: right; }
figure.tile { margin: 2px; cursor: zoom-in; display: inline-block; }
figure.tile img { display: block; image-rendering: pixelated; min-width: 96px; }
figure.tile.selected img { outline: 3px solid #e33; }
figure.tile figcaption { font-size: 11px; color: #555; }
td.missing { background: #ddd; color: #777; font-size: 11px; text-align: center; }
#compare { border-top: 1px solid #ccc; padding-top: 12px; }
.view-column { display: inline-block; vertical-align: top; margin: 8px 16px 8px 0; }
.view { position: relative; display: inline-block; vertical-align: top; margin: 8px 16px 8px 0; }
.view-column .view { margin: 0; }
.view img, .view canvas { display: block; width: 320px; image-rendering: pixelated; }
#slider-a-clip { position: absolute; top: 0; left: 0; height: 100%; width: 50%; overflow: hidden; pointer-events: none; }
#slider-a-clip img { width: 320px; max-width: none; }
#divider { position: absolute; top: 0; left: 50%; width: 2px; height: 100%; background: #e33; pointer-events: none; }
#slider { width: 320px; display: block; }
#diff { position: absolute; top: 0; left: 0; opacity: 0.85; }
#lightbox { position: fixed; inset: 0; background: rgba(0,0,0,.85); display: flex; gap: 16px;
            align-items: center; justify-content: center; color: #eee; }
#lightbox[hidden] { display: none; }
#lightbox img { max-width: 70vw; max-height: 90vh; min-width: 256px; image-rendering: pixelated; }
#lightbox pre { max-width: 25vw; max-height: 90vh; overflow: auto; font-size: 11px; }
"""

SCRIPT = """
const IMAGES = JSON.parse(document.getElementById('images').textContent);
const $ = (id) => document.getElementById(id);
const tiles = Array.from(document.querySelectorAll('figure.tile'));
let current = -1;

function show(i) {
  current = (i + IMAGES.length) % IMAGES.length;
  $('lightbox-image').src = IMAGES[current].src;
  $('lightbox-settings').textContent = IMAGES[current].label + '\\n\\n' + IMAGES[current].settings;
  $('lightbox').hidden = false;
  tiles.forEach((t) => t.classList.toggle('selected', Number(t.dataset.index) === current));
}
function closeBox() { $('lightbox').hidden = true; }

function pick(which, i) {
  const img = IMAGES[i];
  $('slider-' + which).src = img.src;
  $('ab-' + which).dataset.src = img.src;
  if ($('ab-image').dataset.showing === which) { $('ab-image').src = img.src; }
  drawDiff();
}
function toggleAB() {
  const next = $('ab-image').dataset.showing === 'a' ? 'b' : 'a';
  $('ab-image').dataset.showing = next;
  $('ab-image').src = $('ab-' + next).dataset.src;
  $('ab-label').textContent = next.toUpperCase();
}
function moveSlider() {
  const v = $('slider').value + '%';
  $('slider-a-clip').style.width = v;
  $('divider').style.left = v;
}
function drawDiff() {
  const canvas = $('diff');
  canvas.hidden = !$('diff-toggle').checked;
  if (canvas.hidden) { return; }
  const a = new Image(), b = new Image();
  let loaded = 0;
  const draw = () => {
    if (++loaded < 2) { return; }
    const w = a.naturalWidth, h = a.naturalHeight;
    canvas.width = w; canvas.height = h;
    const ctx = canvas.getContext('2d');
    ctx.drawImage(a, 0, 0); const pa = ctx.getImageData(0, 0, w, h);
    ctx.drawImage(b, 0, 0, w, h); const pb = ctx.getImageData(0, 0, w, h);
    for (let k = 0; k < pa.data.length; k += 4) {
      const d = (Math.abs(pa.data[k] - pb.data[k]) + Math.abs(pa.data[k+1] - pb.data[k+1]) + Math.abs(pa.data[k+2] - pb.data[k+2])) / 3;
      pa.data[k] = 255; pa.data[k+1] = 0; pa.data[k+2] = 0; pa.data[k+3] = Math.min(255, d * 4);
    }
    ctx.putImageData(pa, 0, 0);
  };
  a.onload = draw; b.onload = draw;
  a.src = $('ab-a').dataset.src; b.src = $('ab-b').dataset.src;
}

tiles.forEach((t) => {
  t.querySelector('img').src = IMAGES[Number(t.dataset.index)].src;  // each image is in the page once
  t.addEventListener('click', () => show(Number(t.dataset.index)));
  t.addEventListener('keydown', (e) => { if (e.key === 'Enter') { show(Number(t.dataset.index)); } });
});
$('lightbox').addEventListener('click', closeBox);
$('pick-a').addEventListener('change', (e) => pick('a', Number(e.target.value)));
$('pick-b').addEventListener('change', (e) => pick('b', Number(e.target.value)));
$('slider').addEventListener('input', moveSlider);
$('ab-toggle').addEventListener('click', toggleAB);
$('diff-toggle').addEventListener('change', drawDiff);
document.addEventListener('keydown', (e) => {
  if (!$('lightbox').hidden) {
    if (e.key === 'Escape') { closeBox(); }
    if (e.key === 'ArrowRight' || e.key === 'ArrowDown') { show(current + 1); }
    if (e.key === 'ArrowLeft' || e.key === 'ArrowUp') { show(current - 1); }
  } else if (e.key === 't') { toggleAB(); }
});
if (IMAGES.length) { pick('a', 0); pick('b', Math.min(1, IMAGES.length - 1)); }
moveSlider();
"""


def data_uri(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def settings_text(entry: Entry) -> str:
    shown = {k: v for k, v in entry.settings.items() if k not in ("llmdit_version",)}
    return "\n".join(f"{k}: {json.dumps(v, default=str)}" for k, v in sorted(shown.items()))


def page(title: str, grids: list[images.Grid], metrics: list[dict[str, Any]]) -> str:
    """The report of `grids` (each tile's settings from its source entry) and a metrics table."""
    catalogue: list[dict[str, str]] = []
    sections = [_grid_html(grid, catalogue) for grid in grids]
    options = "".join(f'<option value="{i}">{html.escape(img["label"])}</option>' for i, img in enumerate(catalogue))
    b_default = min(1, len(catalogue) - 1)
    compare = f"""
<section id="compare">
  <h2>Compare two images</h2>
  <label>A <select id="pick-a">{options}</select></label>
  <label>B <select id="pick-b">{options.replace(f'value="{b_default}"', f'value="{b_default}" selected', 1)}</select></label>
  <div>
    <div class="view-column">
      <div class="view" id="slider-view" title="slider: A on the left of the divider, B on the right">
        <img id="slider-b" alt="B"><div id="slider-a-clip"><img id="slider-a" alt="A"></div><div id="divider"></div>
      </div>
      <input type="range" id="slider" min="0" max="100" value="50" aria-label="divider position">
    </div>
    <div class="view" title="A/B toggle (button or the t key); difference overlay in red">
      <img id="ab-image" data-showing="a" alt="A or B"><canvas id="diff" hidden></canvas>
      <button id="ab-toggle">A/B</button> showing <b id="ab-label">A</b>
      <label><input type="checkbox" id="diff-toggle"> difference overlay</label>
      <span id="ab-a" hidden></span><span id="ab-b" hidden></span>
    </div>
  </div>
</section>"""
    table = _metrics_html(metrics)
    # Inside <script> only "<" can end the element early (`</script>`, `<!--`): escape every one.
    data = json.dumps(catalogue).replace("<", "\\u003c")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{STYLE}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p>{len(catalogue)} images. Hover an image for its settings, click to enlarge (arrow keys step, Esc closes).</p>
{"".join(sections)}
{compare}
{table}
<div id="lightbox" hidden><img id="lightbox-image" alt="enlarged"><pre id="lightbox-settings"></pre></div>
<script type="application/json" id="images">{data}</script>
<script>{SCRIPT}</script>
</body></html>
"""


def _grid_html(grid: images.Grid, catalogue: list[dict[str, str]]) -> str:
    head = "".join(f"<th>{html.escape(_name(grid.col_axis, c))}</th>" for c in grid.cols)
    rows = []
    for i, r in enumerate(grid.rows):
        cells = []
        for j, c in enumerate(grid.cols):
            tile = grid.tiles.get((i, j))
            if tile is None:
                cells.append(f'<td class="missing">{html.escape(grid.notes.get((i, j), "missing"))}</td>')
                continue
            entry = grid.sources.get((i, j))
            label = " ".join(x for x in (grid.title, _name(grid.row_axis, r), _name(grid.col_axis, c)) if x)
            settings = settings_text(entry) if entry else ""
            catalogue.append({"src": data_uri(tile), "label": label or f"image {len(catalogue)}", "settings": settings})
            note = grid.notes.get((i, j), "")
            cells.append(
                f'<td><figure class="tile" data-index="{len(catalogue) - 1}" tabindex="0">'
                f'<img alt="{html.escape(label)}" title="{html.escape(settings)}">'
                f"<figcaption>{html.escape(note)}</figcaption></figure></td>"
            )
        rows.append(f'<tr><th class="row">{html.escape(_name(grid.row_axis, r))}</th>{"".join(cells)}</tr>')
    title = f"<h2>{html.escape(grid.title)}</h2>" if grid.title else ""
    return f'{title}<table class="grid"><tr><th></th>{head}</tr>{"".join(rows)}</table>'


def _name(axis: str | None, value) -> str:
    return images.axis_label(axis, value)


def _metrics_html(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    keys = list(dict.fromkeys(k for r in rows for k in r if k not in ("image", "reference")))
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(k)))}</td>" for k in keys) + "</tr>" for r in rows)
    return f'<section id="metrics"><h2>Metrics</h2><table class="grid"><tr>{head}</tr>{body}</table></section>'


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)
