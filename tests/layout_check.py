"""What a projector shows badly, found in the browser: text drawn over other text, text cut off by its
container (or by the window's right edge), text too faint to read (WCAG 2.1 contrast, AA), a table's
column name (or a word of Compress's coder table) broken over two lines, an accordion's title run into its arrow,
and a chart's toolbar icons on its title.

``problems(page)`` runs one script in the page and returns one line per problem (empty: the view is fine).
Only what is on screen counts: hidden tabs, closed accordions and invisible layers are skipped.
"""

from __future__ import annotations

# Text boxes: one rectangle per line of every visible text node (HTML), one per SVG <text> (plotly; a rotated
# label is its slanted rectangle), one per text input's value. Two boxes of different nodes that share more
# than 2 x 2 px overlap; a box outside an
# ancestor that clips (overflow hidden/clip, or a horizontal scroll) or outside the window is cut; an
# input whose value is wider than the box is cut. Contrast: the text colour against the first opaque
# background behind it (ancestors' opacity and translucent backgrounds blended), 4.5:1 for normal text and
# 3:1 for large text (24 px, or 18.66 px bold), as WCAG 2.1 SC 1.4.3 says.
_SCRIPT = r"""
(limit) => {
  const out = [];
  const vw = document.documentElement.clientWidth;
  const visible = (el) => el && el.checkVisibility({opacityProperty: true, visibilityProperty: true});
  const name = (el) => {
    const parts = [];
    for (let e = el; e && parts.length < 3; e = e.parentElement) {
      if (e.id) { parts.unshift('#' + e.id); break; }
      parts.unshift(e.tagName.toLowerCase() + (typeof e.className === 'string' && e.className.trim()
        ? '.' + e.className.trim().split(/\s+/)[0] : ''));
    }
    return parts.join(' > ');
  };
  // A rotated label (a chart's slanted tick labels) covers a slanted rectangle, not its bounding box: the
  // boxes of neighbouring slanted labels overlap where their letters do not. Its four corners on screen.
  const turned = (t) => {
    const m = t.getScreenCTM();
    if (!m || (Math.abs(m.b) < 1e-6 && Math.abs(m.c) < 1e-6)) return null;
    const b = t.getBBox();
    return [[b.x, b.y], [b.x + b.width, b.y], [b.x + b.width, b.y + b.height], [b.x, b.y + b.height]]
      .map(([x, y]) => [m.a * x + m.c * y + m.e, m.b * x + m.d * y + m.f]);
  };
  const boxes = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const text = node.textContent.trim();
    const el = node.parentElement;
    if (!text || !el || !visible(el) || el.closest('script, style, noscript, title, option, textarea, [aria-hidden=true], .sr-only'))
      continue;
    const inSvg = el instanceof SVGElement;
    if (inSvg) {
      const t = el.closest('text');
      if (!t || t.dataset.lmlabSeen === '1') continue;
      t.dataset.lmlabSeen = '1';
      const r = t.getBoundingClientRect();
      if (r.width > 0.5 && r.height > 0.5) boxes.push({el: t, r, text: t.textContent.trim(), svg: true, quad: turned(t)});
      continue;
    }
    const range = document.createRange();
    range.selectNodeContents(node);
    for (const r of range.getClientRects()) {
      if (r.width > 0.5 && r.height > 0.5) boxes.push({el, r, text, svg: false});
    }
  }
  document.querySelectorAll('[data-lmlab-seen]').forEach(e => delete e.dataset.lmlabSeen);
  for (const input of document.querySelectorAll('input[type=text], input:not([type])')) {
    if (!visible(input) || !input.value) continue;
    if (input.scrollWidth > input.clientWidth + 1)
      out.push(`cut: ${name(input)} shows only part of its value ${JSON.stringify(input.value.slice(0, 40))}`);
  }
  // What of each box is on screen: clipped by every ancestor that clips (a scrolled-away line is not on
  // screen at all). Cut: part of a line hidden by a container that does not scroll that way, by a
  // horizontal scroll (on a projector nobody scrolls sideways), by its chart or by the window.
  const shown = [];
  for (const b of boxes) {
    let v = {left: b.r.left, right: b.r.right, top: b.r.top, bottom: b.r.bottom};
    let why = null;
    if (b.r.right > vw + 1 || b.r.left < -1) why = 'the window';
    for (let e = b.el.parentElement; e && e !== document.body; e = e.parentElement) {
      if (e instanceof SVGElement && !(e instanceof SVGSVGElement && !(e.parentElement instanceof SVGElement))) continue;
      const c = e.getBoundingClientRect();
      // (a line's hanging space may poke out of a box that has nothing to scroll: not a cut)
      const wide = e instanceof SVGSVGElement || e.scrollWidth > e.clientWidth + 1;
      const outX = wide && (v.left < c.left - 2 || v.right > c.right + 2);
      const outY = v.top < c.top - 2 || v.bottom > c.bottom + 2;
      let clipX, clipY, scrollY = false;
      if (e instanceof SVGSVGElement) { clipX = clipY = true; }
      else {
        const s = getComputedStyle(e);
        clipX = s.overflowX !== 'visible';
        clipY = s.overflowY !== 'visible';
        scrollY = s.overflowY === 'auto' || s.overflowY === 'scroll';
      }
      if (clipX) { v.left = Math.max(v.left, c.left); v.right = Math.min(v.right, c.right); }
      if (clipY) { v.top = Math.max(v.top, c.top); v.bottom = Math.min(v.bottom, c.bottom); }
      if (v.right - v.left <= 0.5 || v.bottom - v.top <= 0.5) { v = null; break; }
      if (!why && ((clipX && outX) || (clipY && outY && !scrollY)))
        why = e instanceof SVGSVGElement ? 'its chart' : name(e);
    }
    if (!v) continue;  // scrolled out of its box: not on screen
    if (why) out.push(`cut: ${JSON.stringify(b.text.slice(0, 30))} (${name(b.el)}) by ${why}`);
    shown.push({...b, v});
  }
  const inter = (a, b) => Math.min(a.right, b.right) - Math.max(a.left, b.left) > 2
                       && Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top) > 2;
  // Two convex quadrilaterals share more than 2 px along every edge's normal (separating axes); for two
  // upright boxes this is the test above.
  const corners = (v) => [[v.left, v.top], [v.right, v.top], [v.right, v.bottom], [v.left, v.bottom]];
  const quadsMeet = (p, q) => {
    for (const poly of [p, q]) {
      for (let i = 0; i < 4; i++) {
        const [x1, y1] = poly[i], [x2, y2] = poly[(i + 1) % 4];
        const len = Math.hypot(x2 - x1, y2 - y1) || 1, nx = (y1 - y2) / len, ny = (x2 - x1) / len;
        const span = (poly2) => { const d = poly2.map(([x, y]) => x * nx + y * ny); return [Math.min(...d), Math.max(...d)]; };
        const [a0, a1] = span(p), [b0, b1] = span(q);
        if (Math.min(a1, b1) - Math.max(a0, b0) <= 2) return false;
      }
    }
    return true;
  };
  const meet = (a, b) => inter(a.v, b.v) && (!a.quad && !b.quad || quadsMeet(a.quad || corners(a.v), b.quad || corners(b.v)));
  for (let i = 0; i < shown.length; i++) {
    for (let j = i + 1; j < shown.length; j++) {
      const a = shown[i], b = shown[j];
      if (a.el === b.el || a.el.contains(b.el) || b.el.contains(a.el) || !meet(a, b)) continue;
      out.push(`overlap: ${JSON.stringify(a.text.slice(0, 30))} (${name(a.el)}) and `
               + `${JSON.stringify(b.text.slice(0, 30))} (${name(b.el)})`);
    }
  }
  // contrast (HTML text)
  const rgba = (s) => { const m = s.match(/[\d.]+/g) || ['0', '0', '0', '0'];
    return m.map(Number).concat(m.length === 3 ? [1] : []).slice(0, 4); };
  const over = (top, bottom) => { const a = top[3];
    return [0, 1, 2].map(i => top[i] * a + bottom[i] * (1 - a)).concat([1]); };
  const lum = (c) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]); };
  const seen = new Set();
  for (const b of shown) {
    if (b.svg || seen.has(b.el)) continue;
    seen.add(b.el);
    const layers = [];
    let opacity = 1, image = false;
    for (let e = b.el; e; e = e.parentElement) {
      const s = getComputedStyle(e);
      opacity *= Number(s.opacity);
      if (s.backgroundImage !== 'none') { image = true; break; }
      const bg = rgba(s.backgroundColor);
      if (bg[3] > 0) { layers.push(bg); if (bg[3] >= 1) break; }
    }
    if (image) continue;
    let bg = [255, 255, 255, 1];
    for (const l of layers.reverse()) bg = over(l, bg);
    const s = getComputedStyle(b.el);
    const fg = rgba(s.color);
    const text = over([fg[0], fg[1], fg[2], fg[3] * opacity], bg);
    const [hi, lo] = [lum(text), lum(bg)].sort((x, y) => y - x);
    const ratio = (hi + 0.05) / (lo + 0.05);
    const size = parseFloat(s.fontSize), bold = Number(s.fontWeight) >= 700;
    const need = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
    if (ratio < need - 0.005)
      out.push(`contrast ${ratio.toFixed(2)}:1 (needs ${need}:1): ${JSON.stringify(b.text.slice(0, 30))} (${name(b.el)})`);
  }
  // a word split over two lines inside: a column's name ("toke / ns": the column is too narrow for its name), or a
  // word of Compress's coder table ("frequencie / s": its columns are sized for their words at 800 px; letters
  // only there, since a model's name may break at its hyphens)
  const splitWords = (boxes, words) => {
    for (const box of boxes) {
      if (!visible(box)) continue;
      const walker = document.createTreeWalker(box, NodeFilter.SHOW_TEXT);
      for (let n = walker.nextNode(); n; n = walker.nextNode()) {
        if (!visible(n.parentElement)) continue;
        for (const m of n.data.matchAll(words)) {
          const r = document.createRange();
          r.setStart(n, m.index);
          r.setEnd(n, m.index + m[0].length);
          const lines = new Set([...r.getClientRects()].filter(b => b.width > 0).map(b => Math.round(b.top)));
          if (lines.size > 1) out.push(`word broken over two lines: ${JSON.stringify(m[0])} (${name(box)})`);
        }
      }
    }
  };
  splitWords(document.querySelectorAll('th'), /[^\s\/]+/g);
  splitWords(document.querySelectorAll('#ct-table .body-cell'), /[A-Za-z]+/g);
  // an accordion's title running into its arrow: at 800 px a long one ended on the ◀ itself, the two boxes
  // touching (sharing 1 px, under the overlap rule's 2); the title must stop 6 px short of it
  for (const button of document.querySelectorAll('button.label-wrap')) {
    const title = button.firstElementChild, icon = button.querySelector('.icon');
    if (!visible(button) || !title || !icon || title === icon) continue;
    const glyph = document.createRange();
    glyph.selectNodeContents(icon);
    const a = glyph.getBoundingClientRect();
    const lines = document.createRange();
    lines.selectNodeContents(title);
    for (const r of lines.getClientRects()) {
      if (r.width > 0.5 && Math.min(r.bottom, a.bottom) > Math.max(r.top, a.top) && r.right > a.left - 6)
        out.push(`title into its arrow: ${JSON.stringify(title.textContent.trim().slice(0, 40))} (${name(button)})`);
    }
  }
  // a chart's toolbar (plotly's modebar) drawn over its title without the mouse on the chart
  for (const bar of document.querySelectorAll('.js-plotly-plot .modebar')) {
    if (!visible(bar)) continue;
    const r = bar.getBoundingClientRect();
    for (const t of bar.closest('.js-plotly-plot').querySelectorAll('.gtitle')) {
      if (visible(t) && inter(r, t.getBoundingClientRect()))
        out.push(`toolbar over a title: ${JSON.stringify(t.textContent.trim().slice(0, 40))} (${name(t)})`);
    }
  }
  return [...new Set(out)].slice(0, limit);
}
"""


def problems(page, limit: int = 40) -> list[str]:
    """Overlapping, cut and faint text on the page as it is now (at most ``limit`` lines)."""
    return page.evaluate(_SCRIPT, limit)
