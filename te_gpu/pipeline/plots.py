"""PNG figures drawn with Pillow alone (no matplotlib).

* :func:`score_figure` -- score against fine-tune accuracy, one point per model,
  before and after SA side by side (the SA paper's teaser panels d/e), weighted
  tau in each panel's title; optionally bootstrap error bars and model names
  placed so that they do not cover each other;
* :func:`tau_figure` -- weighted tau per metric with its bootstrap interval, and
  baselines (static rankings) as horizontal lines;
* :func:`accuracy_label` -- the accuracy axis' name for the truth's regime;
* :func:`embedding_figure` -- a 2-D PCA view of one model's features before and
  after SA, coloured by class (panels b/c).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
MARKERS = ("circle", "square", "triangle", "diamond", "down", "cross", "plus", "star")
INK = (30, 30, 30)
GRID = (225, 225, 225)
GRID_DARK = (150, 150, 150)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size only
        return ImageFont.load_default()


def _text_size(draw, text, font):
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def nice_ticks(lo: float, hi: float, count: int = 5):
    """Round tick values covering [lo, hi] -> (ticks, new lo, new hi)."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        lo, hi = 0.0, 1.0
    if hi <= lo:
        pad = abs(lo) * 0.05 or 0.5
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(1, count)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    stop = math.ceil(hi / step) * step
    ticks = [start + i * step for i in range(int(round((stop - start) / step)) + 1)]
    return ticks, start, stop


def _fmt(v: float, step: float) -> str:
    decimals = max(0, -int(math.floor(math.log10(step))) if step > 0 else 0)
    while decimals < 6 and step > 0 and abs(round(step, decimals) - step) > 1e-9 * step:
        decimals += 1                    # a step of 0.25 needs 2 decimals, not 1 ("0.2")
    if abs(v) >= 1e5 or (abs(v) < 1e-3 and v != 0 and decimals > 6):
        return f"{v:.2g}"
    return f"{v:.{min(decimals, 6)}f}"


def draw_marker(draw, x, y, r, shape, fill, outline=INK):
    if shape == "circle":
        draw.ellipse([x - r, y - r, x + r, y + r], fill=fill, outline=outline)
    elif shape == "square":
        draw.rectangle([x - r, y - r, x + r, y + r], fill=fill, outline=outline)
    elif shape == "triangle":
        draw.polygon([(x, y - r), (x + r, y + r), (x - r, y + r)], fill=fill, outline=outline)
    elif shape == "down":
        draw.polygon([(x, y + r), (x + r, y - r), (x - r, y - r)], fill=fill, outline=outline)
    elif shape == "diamond":
        draw.polygon([(x, y - r), (x + r, y), (x, y + r), (x - r, y)], fill=fill, outline=outline)
    elif shape == "star":
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else r * 0.45
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((x + rad * math.cos(a), y + rad * math.sin(a)))
        draw.polygon(pts, fill=fill, outline=outline)
    elif shape == "cross":
        w = max(2, r // 2)
        draw.line([x - r, y - r, x + r, y + r], fill=fill, width=w)
        draw.line([x - r, y + r, x + r, y - r], fill=fill, width=w)
    else:  # plus
        w = max(2, r // 2)
        draw.line([x - r, y, x + r, y], fill=fill, width=w)
        draw.line([x, y - r, x, y + r], fill=fill, width=w)


ACCURACY_LABELS = {"finetune": "fine-tune accuracy (%)",
                   "lbft": "last-block fine-tune accuracy (%)",
                   "lft": "linear-probe accuracy (%)"}


def accuracy_label(regime, percent: bool = True) -> str:
    """The axis name of accuracies measured in ``regime`` (finetune, lbft, lft); a regime
    not known (a user's own table): "accuracy (%)". ``percent=False`` (accuracies given as
    fractions, :func:`in_percent`): the same name without "(%)"."""
    label = ACCURACY_LABELS.get(regime, "accuracy (%)")
    return label if percent else label.replace(" (%)", "")


def in_percent(accuracy: dict) -> bool:
    """Whether accuracies ({model: value}) are percentages: some value above 1 (a fraction
    never is; a zoo of percentages all at or below 1 % is not one anyone ranks)."""
    return any(float(v) > 1.0 for v in accuracy.values())


def place_labels(boxes, bounds, step=2, obstacles=()):
    """Positions of text boxes that cover neither each other nor ``obstacles``, greedily,
    in the order given.

    ``boxes``: [(x, y, w, h)] wanted top-left corners and sizes (pixels), optionally with a
    5th item, the x of the mirror position (e.g. left of the point instead of right);
    ``bounds``: (x0, y0, x1, y1) they must stay in; ``obstacles``: [(x, y, w, h)] already
    taken (markers, error bars). Each box tries its wanted place, then its mirror, then
    moves up or down - nearest first, wanted side before mirror - to the first place that
    overlaps nothing placed before it. Where nothing is free it keeps its wanted place.
    Returns [(x, y)].
    """
    placed, out = list(obstacles), []
    x0, y0, x1, y1 = bounds

    def clamp_x(x, w):
        return min(max(x, x0), max(x0, x1 - w))

    def free(x, y, w, h, others):
        return not any(x < px + pw and px < x + w and y < py + ph and py < y + h
                       for px, py, pw, ph in others)

    for item in boxes:
        x, y, w, h = item[:4]
        sides = [clamp_x(x, w)] + ([clamp_x(item[4], w)] if len(item) > 4 else [])
        if x + w > x1 and len(sides) > 1:
            sides.reverse()                      # the wanted side runs out of the plot
        top_limit, bottom_limit = y0, max(y0, y1 - h)
        found = None
        for k in range(0, 2 * int((y1 - y0) / step) + 2):
            yy = y + (k + 1) // 2 * step * (1 if k % 2 else -1)   # 0, +s, -s, +2s, ...
            if yy < top_limit or yy > bottom_limit:
                continue
            for xx in sides:
                if free(xx, yy, w, h, placed):
                    found = (xx, yy)
                    break
            if found:
                break
        if found is None:
            found = (sides[0], min(max(y, top_limit), bottom_limit))
        placed.append((*found, w, h))
        out.append(found)
    return out


class Axes:
    """A rectangular plot area with linear x and y scales; ``xticklabels`` [(value,
    text)] replaces the numeric x ticks (a categorical axis)."""

    def __init__(self, image, box, xlim, ylim, *, title="", xlabel="", ylabel="", font=12,
                 xticklabels=None):
        from PIL import ImageDraw

        self.image = image
        self.draw = ImageDraw.Draw(image)
        self.font = _font(font)
        self.title_font = _font(font + 3)
        x0, y0, x1, y1 = box
        self.xticklabels = xticklabels
        self.taken = []   # boxes (x, y, w, h) that names placed later keep off
        if xticklabels is None:
            self.xticks, xlo, xhi = nice_ticks(*xlim)
        else:
            self.xticks, (xlo, xhi) = [v for v, _ in xticklabels], xlim
        self.yticks, ylo, yhi = nice_ticks(*ylim)
        ytl = max(_text_size(self.draw, _fmt(t, self._step(self.yticks)), self.font)[0]
                  for t in self.yticks)
        fh = _text_size(self.draw, "Ag", self.font)[1]
        # plot area inside the box, leaving room for the labels
        self.px0 = x0 + ytl + fh + 18
        self.px1 = x1 - 8
        self.py0 = y0 + (_text_size(self.draw, "Ag", self.title_font)[1] + 14 if title else 8)
        self.py1 = y1 - 2 * fh - 18 - (fh + 4 if xticklabels is not None else 0)
        self.xlo, self.xhi, self.ylo, self.yhi = xlo, xhi, ylo, yhi
        self._frame(title, xlabel, ylabel, fh)

    @staticmethod
    def _step(ticks):
        return ticks[1] - ticks[0] if len(ticks) > 1 else 1.0

    def x(self, v):
        return self.px0 + (v - self.xlo) / (self.xhi - self.xlo) * (self.px1 - self.px0)

    def y(self, v):
        return self.py1 - (v - self.ylo) / (self.yhi - self.ylo) * (self.py1 - self.py0)

    def _frame(self, title, xlabel, ylabel, fh):
        d = self.draw
        xs, ys = self._step(self.xticks), self._step(self.yticks)
        names = dict(self.xticklabels) if self.xticklabels is not None else None
        right_end = -math.inf
        for t in self.xticks:
            X = self.x(t)
            d.line([X, self.py0, X, self.py1], fill=GRID)
            d.line([X, self.py1, X, self.py1 + 4], fill=INK)
            s = _fmt(t, xs) if names is None else names[t]
            w, _ = _text_size(d, s, self.font)
            # categorical names too wide for their place go one line lower
            lower = names is not None and X - w / 2 < right_end + 4
            d.text((X - w / 2, self.py1 + 6 + (fh + 4 if lower else 0)), s, fill=INK, font=self.font)
            right_end = right_end if lower else X + w / 2
        for t in self.yticks:
            Y = self.y(t)
            d.line([self.px0, Y, self.px1, Y], fill=GRID)
            d.line([self.px0 - 4, Y, self.px0, Y], fill=INK)
            s = _fmt(t, ys)
            w, h = _text_size(d, s, self.font)
            d.text((self.px0 - 6 - w, Y - h / 2 - 2), s, fill=INK, font=self.font)
        d.rectangle([self.px0, self.py0, self.px1, self.py1], outline=INK)
        if title:
            w, _ = _text_size(d, title, self.title_font)
            d.text(((self.px0 + self.px1) / 2 - w / 2, self.py0 - fh - 16), title, fill=INK,
                   font=self.title_font)
        if xlabel:
            w, _ = _text_size(d, xlabel, self.font)
            below = fh + 12 + (fh + 4 if self.xticklabels is not None else 0)
            d.text(((self.px0 + self.px1) / 2 - w / 2, self.py1 + below), xlabel, fill=INK,
                   font=self.font)
        if ylabel:
            self._vertical_text(ylabel, self.px0 - 10 - max(
                _text_size(d, _fmt(t, ys), self.font)[0] for t in self.yticks) - fh - 4,
                (self.py0 + self.py1) / 2)

    def _vertical_text(self, text, left, centre_y):
        from PIL import Image, ImageDraw

        w, h = _text_size(self.draw, text, self.font)
        tmp = Image.new("L", (w + 4, h + 8), 0)
        ImageDraw.Draw(tmp).text((2, 0), text, fill=255, font=self.font)
        rot = tmp.rotate(90, expand=True)
        ink = Image.new("RGB", rot.size, INK)
        self.image.paste(ink, (int(left), int(centre_y - rot.size[1] / 2)), rot)

    def scatter(self, xs, ys, *, color, marker="circle", r=5, outline=INK):
        for a, b in zip(xs, ys):
            draw_marker(self.draw, self.x(a), self.y(b), r, marker, color, outline)

    def error_bar(self, xv, lo, hi, *, color=INK, cap=4, width=2):
        """A vertical bar from ``lo`` to ``hi`` at ``xv``, with caps."""
        X, Y0, Y1 = self.x(xv), self.y(lo), self.y(hi)
        self.taken.append((X - cap, min(Y0, Y1), 2 * cap, abs(Y0 - Y1)))   # names keep off it
        self.draw.line([X, Y0, X, Y1], fill=color, width=width)
        for Y in (Y0, Y1):
            self.draw.line([X - cap, Y, X + cap, Y], fill=color, width=width)

    def hline(self, yv, *, color=INK, dash=6, width=1):
        """A dashed horizontal line across the plot at ``yv``."""
        Y = self.y(yv)
        x = self.px0
        while x < self.px1:
            self.draw.line([x, Y, min(x + dash, self.px1), Y], fill=color, width=width)
            x += 2 * dash

    def names(self, points, *, colors=None):
        """Model names beside their points [(xv, yv, text)], moved up or down where they
        would cover another name (:func:`place_labels`), with a thin line back to the
        point when moved."""
        boxes, taken = [], list(self.taken)
        for xv, yv, text in points:
            X, Y = self.x(xv), self.y(yv)
            w, h = _text_size(self.draw, text, self.font)
            boxes.append((X + 9, Y - h / 2 - 2, w, h + 3, X - 9 - w))
            taken.append((X - 7, Y - 7, 14, 14))            # the markers
        where = place_labels(boxes, (self.px0 + 2, self.py0 + 2, self.px1 - 2, self.py1 - 2),
                             obstacles=taken)
        for (xv, yv, text), (bx, by), box in zip(points, where, boxes):
            color = (colors or {}).get(text, INK)
            X, Y = self.x(xv), self.y(yv)
            if abs(by - box[1]) > 1:
                anchor_x = bx if bx > X else bx + box[2]
                self.draw.line([X, Y, anchor_x, by + box[3] / 2], fill=GRID_DARK)
            self.draw.text((bx, by), text, fill=color, font=self.font)

    def label(self, xv, yv, text, color=INK):
        X, Y = self.x(xv), self.y(yv)
        w, h = _text_size(self.draw, text, self.font)
        tx = X + 8 if X + 8 + w < self.px1 else X - 8 - w
        self.draw.text((tx, Y - h / 2 - 2), text, fill=color, font=self.font)


def _legend(image, entries, left, top, font_size=12):
    """entries: [(text, colour, marker)] drawn as a column."""
    from PIL import ImageDraw

    d = ImageDraw.Draw(image)
    font = _font(font_size)
    y = top
    for text, color, marker in entries:
        draw_marker(d, left + 6, y + 8, 5, marker, color)
        d.text((left + 18, y), text, fill=INK, font=font)
        y += font_size + 8
    return y


def _spread(values):
    v = np.asarray(list(values), dtype=np.float64)
    lo, hi = float(v.min()), float(v.max())
    pad = (hi - lo) * 0.08 or (abs(lo) * 0.05 or 0.5)
    return lo - pad, hi + pad


def score_figure(panels, accuracy: dict, out, *, suptitle="", xlabel="fine-tune accuracy (%)",
                 width_per_panel=560, height=520, intervals=None, names=False) -> Path:
    """Score vs accuracy, one panel per ``(title, {model: score})`` in ``panels``.

    ``intervals``: one ``{model: (lo, hi)}`` (or None) per panel, drawn as error bars
    (e.g. :meth:`te_gpu.bootstrap.BootstrapResult.interval`); ``names``: write each
    model's name beside its point, placed so that names do not cover each other.
    ``xlabel``: :func:`accuracy_label` of the truth's regime.
    """
    if intervals is not None and len(intervals) != len(panels):
        raise ValueError(f"intervals: one per panel ({len(panels)}), got {len(intervals)}")
    from PIL import Image, ImageDraw

    models = [m for m in accuracy if all(m in sc for _, sc in panels)]
    if len(models) < 2:
        raise ValueError("fewer than 2 models have both a score and an accuracy")
    style = {m: (PALETTE[i % len(PALETTE)], MARKERS[(i // len(PALETTE) + i) % len(MARKERS)])
             for i, m in enumerate(models)}
    legend_w = 40 + max(len(m) for m in models) * 8
    top = 40 if suptitle else 10
    image = Image.new("RGB", (width_per_panel * len(panels) + legend_w, height + top), "white")
    d = ImageDraw.Draw(image)
    if suptitle:
        f = _font(17)
        w, _ = _text_size(d, suptitle, f)
        d.text((image.size[0] / 2 - w / 2, 10), suptitle, fill=INK, font=f)
    xs = [accuracy[m] for m in models]
    for k, (title, scores) in enumerate(panels):
        ys = [scores[m] for m in models]
        bars = (intervals[k] or {}) if intervals is not None else {}
        span = ys + [v for m in models if m in bars for v in bars[m]]
        ax = Axes(image, (k * width_per_panel + 5, top, (k + 1) * width_per_panel - 10, top + height - 5),
                  _spread(xs), _spread(span), title=title, xlabel=xlabel, ylabel="score")
        for m, a in zip(models, xs):
            if m in bars:
                ax.error_bar(a, *bars[m], color=style[m][0])
        for m, a, b in zip(models, xs, ys):
            color, marker = style[m]
            ax.scatter([a], [b], color=color, marker=marker, r=6)
        if names:
            order = sorted(range(len(models)), key=lambda i: -ys[i])   # from the top down
            ax.names([(xs[i], ys[i], models[i]) for i in order])
    _legend(image, [(m, *style[m]) for m in sorted(models, key=lambda m: -accuracy[m])],
            width_per_panel * len(panels) + 4, top + 30)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out)
    return out


def tau_figure(rows, out, *, baselines=None, title="", ylabel="weighted tau (tau_w)",
               width=None, height=460) -> Path:
    """Weighted tau per metric with its interval, and baselines as horizontal lines.

    ``rows``: [(metric label, tau_w, lo, hi)] (lo/hi None: no bar), drawn left to right;
    ``baselines``: {name: tau_w} of static rankings (ImageNet accuracy, parameter count,
    ...), each a dashed line named at the right, names kept apart.
    """
    from PIL import Image

    rows = list(rows)
    if not rows:
        raise ValueError("no metric to draw")
    baselines = dict(baselines or {})
    values = [v for _, t, lo, hi in rows for v in (t, lo, hi) if v is not None]
    values += list(baselines.values())
    lo_all, hi_all = min(values + [0.0]), max(values + [0.0])
    pad = 0.08 * ((hi_all - lo_all) or 1.0)
    names_w = max([len(n) for n in baselines] + [0]) * 7 + (16 if baselines else 0)
    from PIL import ImageDraw

    title_w = _text_size(ImageDraw.Draw(Image.new("RGB", (1, 1))), title, _font(15))[0] + 40
    width = width or max(480, 90 * len(rows) + 140 + names_w, title_w)
    image = Image.new("RGB", (width, height), "white")
    ax = Axes(image, (5, 5, width - 10 - names_w, height - 5), (-0.5, len(rows) - 0.5),
              (max(-1.0, lo_all - pad), min(1.0, hi_all + pad)), title=title, ylabel=ylabel,
              xlabel="metric", xticklabels=[(i, r[0]) for i, r in enumerate(rows)])
    ax.hline(0.0, color=GRID_DARK, dash=2)
    label_boxes = []
    for j, (name, v) in enumerate(baselines.items()):
        color = PALETTE[(j + 3) % len(PALETTE)]
        ax.hline(v, color=color, width=2)
        w, h = _text_size(ax.draw, name, ax.font)
        label_boxes.append((ax.px1 + 6, ax.y(v) - h / 2 - 2, w, h + 3))
    for (x, y), (name, v), j in zip(place_labels(label_boxes, (ax.px1 + 6, ax.py0, width - 2, ax.py1)),
                                    baselines.items(), range(len(baselines))):
        ax.draw.text((x, y), name, fill=PALETTE[(j + 3) % len(PALETTE)], font=ax.font)
    for i, (name, t, lo, hi) in enumerate(rows):
        if lo is not None and hi is not None:
            ax.error_bar(i, lo, hi, color=PALETTE[0], cap=6)
        ax.scatter([i], [t], color=PALETTE[0], marker="circle", r=6)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out)
    return out


def pca_2d(x) -> np.ndarray:
    """First two principal components (float64)."""
    x = np.asarray(x, dtype=np.float64)
    xc = x - x.mean(0)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    z = xc @ vt[:2].T
    # a sign convention so reruns look the same
    signs = np.sign(z[np.argmax(np.abs(z), axis=0), np.arange(z.shape[1])])
    signs[signs == 0] = 1
    return z * signs


def sa_caption(variant: str, info: dict) -> str:
    """A panel title saying in plain words what Spread/Attract did to these features."""
    if not info["applied"]:
        return (f"SA ({variant}) not applied: spread too small for its gate, "
                "raw features shown")
    return f"after Spread/Attract ({variant}); points moved {info['displacement_norm']:.3g} in all"


def sa_summary(info: dict) -> str:
    """One sentence for the terminal: why SA did or did not apply, and how far it moved points."""
    passes = info["gate_value"] > info["gate_threshold"]
    head = (f"the mean of the features' two largest variances is {info['gate_value']:.3g}, "
            f"{'above' if passes else 'at or below'} the {info['gate_threshold']:.3g} that SA's "
            "gate requires")
    if not info["applied"]:
        return f"SA left the features as they are: {head}"
    gate = "" if passes else ", applied anyway: the gate was off"
    return (f"SA applied ({head}{gate}); it moved the points by {info['displacement_norm']:.3g} "
            "in all (the Frobenius norm of the move, in PCA space)")


def embedding_figure(panels, labels, out, *, class_names=None, suptitle="", max_points=2000,
                     seed=0, size=520) -> Path:
    """2-D views ``[(title, N x 2)]`` coloured by class, side by side."""
    from PIL import Image, ImageDraw

    labels = np.asarray(labels)
    classes = np.unique(labels)
    idx = np.arange(labels.size)
    if labels.size > max_points:
        idx = np.sort(np.random.default_rng(seed).choice(labels.size, max_points, replace=False))
    names = class_names or [str(c) for c in classes]
    legend_w = 40 + max(len(str(n)) for n in names) * 8
    top = 40 if suptitle else 10
    image = Image.new("RGB", (size * len(panels) + legend_w, size + top), "white")
    d = ImageDraw.Draw(image)
    if suptitle:
        f = _font(17)
        w, _ = _text_size(d, suptitle, f)
        d.text((image.size[0] / 2 - w / 2, 10), suptitle, fill=INK, font=f)
    for k, (title, z) in enumerate(panels):
        z = np.asarray(z)[idx]
        ax = Axes(image, (k * size + 5, top, (k + 1) * size - 10, top + size - 5),
                  _spread(z[:, 0]), _spread(z[:, 1]), title=title, xlabel="PC 1", ylabel="PC 2")
        for j, c in enumerate(classes):
            sel = labels[idx] == c
            ax.scatter(z[sel, 0], z[sel, 1], color=PALETTE[j % len(PALETTE)],
                       marker=MARKERS[(j // len(PALETTE)) % len(MARKERS)], r=2, outline=None)
    _legend(image, [(str(names[j]) if j < len(names) else str(c), PALETTE[j % len(PALETTE)],
                     MARKERS[(j // len(PALETTE)) % len(MARKERS)]) for j, c in enumerate(classes)],
            size * len(panels) + 4, top + 30)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out)
    return out


def recommend_figures(rec, accuracy: dict, folder, *, regime=None, baselines=None,
                      where: str = "") -> list:
    """PNGs in ``folder``: each label's score against accuracy with its intervals and the
    models' names (``{label}_vs_accuracy.png``), and tau_w per label with intervals and
    ``baselines`` ({name: tau_w}) as lines (``tau_w.png``;
    :func:`te_gpu.pipeline.extract.store_rankings` gives the static rankings a te_gpu
    store knows). The accuracy axis is named after ``regime``,
    with "(%)" where the accuracies are percentages. Returns the paths."""
    from te_gpu.recommend import CONSENSUS, against_truth

    folder = Path(folder)
    rows = against_truth(rec, accuracy)
    axis = accuracy_label(regime, in_percent(accuracy))
    files = []
    level = f"{100 * rec.boot.level:.0f} %"
    for r in rows:
        lb = r["label"]
        if lb == CONSENSUS:
            continue
        scores = {m: rec.boot.point[lb][m] for m in r["models"]}
        title = f"{lb}: tau_w = {r['tau_w']:+.3f} [{r['lo']:+.3f}, {r['hi']:+.3f}]"
        files.append(score_figure([(title, scores)], accuracy, folder / f"{lb}_vs_accuracy.png",
                                  suptitle=f"{lb} against {where or 'accuracy'} ({level} intervals "
                                           f"over {rec.boot.replicates} resamples)",
                                  xlabel=axis,
                                  intervals=[rec.boot.interval(lb)], names=True))
    files.append(tau_figure([(r["label"], r["tau_w"], r["lo"], r["hi"]) for r in rows],
                            folder / "tau_w.png", baselines=baselines,
                            title=f"tau_w against {axis}"
                                  f"{' - ' + where if where else ''} ({level} intervals)"))
    return files
