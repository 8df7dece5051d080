"""Drawing primitives of the Synthetic Shapes dataset (SuperPoint, section 4 of the paper).

Every primitive takes a background image (uint8 gray ``H x W``, see :func:`generate_background`)
and a ``numpy.random.Generator`` and returns ``(image, points)``: the image with the shape drawn
on it (a new array; the input is not modified) and its interest points as an ``N x 2`` float32
array of ``(x, y)`` pixel coordinates (pixel centre of the top-left pixel at (0, 0)).

The points are the visible corners / junctions / line ends of what was drawn: points outside the
image are dropped, shapes that would overlap an earlier shape are not drawn (polygons, ellipses),
points covered by a later stroke are dropped (lines, star branches), and the cube's back vertex
is never returned. Shapes are drawn at integer pixel positions, so each returned point is exactly
the pixel OpenCV drew the corner at.

Parameters and their defaults follow the paper's reference implementation (at its 960 x 1280
drawing resolution); the configurable ones are the keyword arguments below, exposed as
``data.generation.params.<function>.<argument>`` (configs/defaults/synthetic_shapes.yaml).
"""
from __future__ import annotations

import inspect
import math
from typing import Callable, Mapping

import cv2
import numpy as np

from utils.geometry import warp_points

MIN_CONTRAST = 30  # a shape's grey level differs from the background's mean by at least this


# --------------------------------------------------------------------------------------------
# random helpers
# --------------------------------------------------------------------------------------------
def _randint(rng: np.random.Generator, low: float, high: float) -> int:
    """Integer in ``[int(low), int(high))``; ``int(low)`` when that interval is empty (tiny images)."""
    low, high = int(low), int(high)
    return int(rng.integers(low, high)) if high > low else low


def random_colors(rng: np.random.Generator, background_color: int, n: int | None = None):
    """Grey levels in [0, 255] that differ from ``background_color`` by at least MIN_CONTRAST.

    A uniform level too close to the background is moved by half the range (as in the paper's
    implementation). Returns an int, or an int array of length ``n``.
    """
    c = rng.integers(0, 256, size=n)
    c = np.where(np.abs(c - int(background_color)) < MIN_CONTRAST, (c + 128) % 256, c)
    return int(c) if n is None else c.astype(np.int64)


def _different_color(rng: np.random.Generator, previous, min_dist: int = 50, max_count: int = 20) -> int:
    """A grey level at least ``min_dist`` away from every level of ``previous`` (up to ``max_count`` tries)."""
    previous = np.asarray(previous)
    color = int(rng.integers(0, 256))
    count = 0
    while np.any(np.abs(previous - color) < min_dist) and count < max_count:
        count += 1
        color = int(rng.integers(0, 256))
    return color


def _uniform_bytes(rng: np.random.Generator, shape) -> np.ndarray:
    """uint8 array of uniform random levels 0..255 (much faster than rng.integers)."""
    return np.frombuffer(rng.bytes(int(np.prod(shape))), np.uint8).reshape(shape).copy()


def _mean(img: np.ndarray) -> int:
    """Mean grey level, truncated to an int (the reference for the contrast of new shapes)."""
    return int(cv2.mean(img)[0])


def _empty_points() -> np.ndarray:
    return np.zeros((0, 2), np.float32)


def _inside(points: np.ndarray, shape) -> np.ndarray:
    """Mask of integer points inside an image of ``shape`` (H, W)."""
    h, w = shape[:2]
    return (points[:, 0] >= 0) & (points[:, 0] <= w - 1) & (points[:, 1] >= 0) & (points[:, 1] <= h - 1)


# --------------------------------------------------------------------------------------------
# 2D geometry helpers (small arrays, vectorised)
# --------------------------------------------------------------------------------------------
def _ccw(a, b, c):
    return (c[..., 1] - a[..., 1]) * (b[..., 0] - a[..., 0]) > (b[..., 1] - a[..., 1]) * (c[..., 0] - a[..., 0])


def _crossings(p1, p2, q1, q2) -> np.ndarray:
    """``N x M`` bool: segment ``p1[i]-p2[i]`` properly crosses segment ``q1[j]-q2[j]``."""
    a, b = p1[:, None].astype(np.float64), p2[:, None].astype(np.float64)
    c, d = q1[None].astype(np.float64), q2[None].astype(np.float64)
    return (_ccw(a, c, d) != _ccw(b, c, d)) & (_ccw(a, b, c) != _ccw(a, b, d))


def _edges(poly: np.ndarray):
    return poly, np.roll(poly, -1, axis=0)


def _is_simple(poly: np.ndarray) -> bool:
    """True if no two non-adjacent edges of the closed polygon cross."""
    n = len(poly)
    a, b = _edges(poly)
    cross = _crossings(a, b, a, b)
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    adjacent = (np.abs(i - j) <= 1) | (np.abs(i - j) == n - 1)
    return not np.any(cross & ~adjacent)


def _point_segment_distance(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``N x M`` Euclidean distances from ``points`` (N x 2) to segments ``a[j]-b[j]`` (M x 2 each)."""
    p = points[:, None].astype(np.float64)
    a, b = a[None].astype(np.float64), b[None].astype(np.float64)
    ab = b - a
    t = np.clip(((p - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0.0, 1.0)
    return np.linalg.norm(p - (a + t[..., None] * ab), axis=-1)


def _not_covered_by_later_strokes(points, owner, seg_a, seg_b, thickness) -> np.ndarray:
    """Mask of stroke end points that no later stroke paints over.

    ``points`` (N x 2) belong to stroke ``owner[i]``; stroke ``j`` is the segment
    ``seg_a[j]-seg_b[j]`` of width ``thickness[j]``, drawn in index order. A point is covered when
    a later stroke passes within its half-width (plus one pixel) of it.
    """
    if len(points) == 0:
        return np.zeros(0, bool)
    d = _point_segment_distance(points, seg_a, seg_b)
    later = np.arange(len(seg_a))[None, :] > np.asarray(owner)[:, None]
    covered = later & (d <= np.asarray(thickness, np.float64)[None, :] / 2 + 1)
    return ~covered.any(axis=1)


def _inside_polygon(points: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Mask of points inside or on the boundary of a polygon."""
    contour = poly.reshape(-1, 1, 2).astype(np.float32)
    return np.array([cv2.pointPolygonTest(contour, (float(x), float(y)), False) >= 0 for x, y in points], bool)


def _boxes_overlap(p: np.ndarray, q: np.ndarray) -> bool:
    """True if the bounding boxes of two point sets intersect."""
    return bool(np.all(p.min(0) <= q.max(0)) and np.all(q.min(0) <= p.max(0)))


def _angle_between(v1: np.ndarray, v2: np.ndarray) -> np.ndarray:
    """Angles (radians, in [0, pi]) between rows of v1 and v2."""
    n1 = np.linalg.norm(v1, axis=-1)
    n2 = np.linalg.norm(v2, axis=-1)
    cos = (v1 * v2).sum(-1) / np.maximum(n1 * n2, 1e-12)
    return np.arccos(np.clip(cos, -1.0, 1.0))


def _radial_points(rng: np.random.Generator, shape, num: int, min_rad_div: int, min_reach: float):
    """``num`` points around a random circle that fits the image, one per angular slice, each at
    ``min_reach`` .. 1 of the radius in x and y (polygon vertices, star branch ends).

    The radius is at least the smaller image side over ``min_rad_div``. Returns (points int64
    num x 2, centre x, centre y, radius).
    """
    h, w = shape[:2]
    min_dim = min(h, w)
    rad = max(rng.random() * min_dim / 2, min_dim / min_rad_div)
    x = _randint(rng, rad, w - rad)
    y = _randint(rng, rad, h - rad)
    slices = np.linspace(0, 2 * math.pi, num + 1)
    angles = slices[:-1] + rng.random(num) * np.diff(slices)
    fx = np.maximum(rng.random(num), min_reach)
    fy = np.maximum(rng.random(num), min_reach)
    pts = np.stack([x + fx * rad * np.cos(angles), y + fy * rad * np.sin(angles)], axis=1).astype(np.int64)
    return pts, x, y, rad


def _random_polygon(rng: np.random.Generator, shape, max_sides: int):
    """Vertices of a random polygon inscribed in a random circle, or None if degenerate.

    3 .. max_sides-1 vertices, one per angular slice, at 0.4 .. 1 of the radius; vertices that
    repeat their predecessor or whose angle is flatter than 120 degrees are removed; fewer than 3
    vertices or a self-crossing outline gives None. Returns (vertices int64 K x 2, centre, radius).
    """
    num = int(rng.integers(3, max_sides))
    pts, x, y, rad = _radial_points(rng, shape, num, min_rad_div=10, min_reach=0.4)
    # repeated vertices, then flat corners
    pts = pts[np.linalg.norm(pts - np.roll(pts, 1, axis=0), axis=1) > 0.01]
    if len(pts) >= 3:
        corner = _angle_between(np.roll(pts, 1, axis=0) - pts, np.roll(pts, -1, axis=0) - pts)
        pts = pts[corner < 2 * math.pi / 3]
    if len(pts) < 3 or not _is_simple(pts):
        return None, np.array([x, y], np.float64), rad
    return pts, np.array([x, y], np.float64), rad


def _board_homography(rng: np.random.Generator, shape, transform_params) -> np.ndarray:
    """Random affine followed by a random perspective warp (3 x 3, board -> image).

    The corners of a square centred on the image (half side min(H, W) // 3) are jittered by up to
    ``alpha = max(H, W) * (p0 + U(0,1) * p1)`` pixels for the affine part and ``alpha / 2`` for the
    perspective part.
    """
    h, w = shape[:2]
    alpha = max(h, w) * (transform_params[0] + rng.random() * transform_params[1])
    cx, cy, half = w // 2, h // 2, min(h, w) // 3
    square = np.float32([[cx + half, cy + half], [cx + half, cy - half],
                         [cx - half, cy - half], [cx - half, cy + half]])
    moved = (square + rng.uniform(-alpha, alpha, size=(4, 2))).astype(np.float32)
    affine = cv2.getAffineTransform(square[:3], moved[:3])
    moved = (square + rng.uniform(-alpha / 2, alpha / 2, size=(4, 2))).astype(np.float32)
    perspective = cv2.getPerspectiveTransform(square, moved)
    return perspective @ np.vstack([affine, [0.0, 0.0, 1.0]])


def _warp_board(rng, shape, board_points, transform_params, max_tries: int = 10):
    """Warp board points into the image with a random homography; integer pixel positions.

    Re-samples the homography if a point would go behind the view (w <= 0) or absurdly far away.
    """
    h, w = shape[:2]
    for _ in range(max_tries):
        H = _board_homography(rng, shape, transform_params)
        depth = np.c_[board_points, np.ones(len(board_points))] @ H[2]
        if np.all(depth > 1e-6):
            warped = warp_points(board_points.astype(np.float64), H)
            if np.all(np.abs(warped) < 20 * max(h, w)):
                return np.rint(warped).astype(np.int64)
    return np.rint(board_points).astype(np.int64)  # identity fallback (never seen in practice)


# --------------------------------------------------------------------------------------------
# background
# --------------------------------------------------------------------------------------------
def generate_background(size, rng: np.random.Generator, nb_blobs: int = 100, min_rad_ratio: float = 0.02,
                        max_rad_ratio: float = 0.031, min_kernel_size: int = 150,
                        max_kernel_size: int = 500) -> np.ndarray:
    """Random background: thresholded uniform noise with contrasting discs, box-blurred.

    Args:
        size: (H, W).
        nb_blobs: number of discs; their radius is in ``[min_rad_ratio, max_rad_ratio) * max(H, W)``
            and their grey level contrasts with the mean of the noise (MIN_CONTRAST).
        min_kernel_size, max_kernel_size: range of the box-blur kernel size.
    Returns:
        uint8 ``H x W`` image.
    """
    h, w = int(size[0]), int(size[1])
    _, img = cv2.threshold(_uniform_bytes(rng, (h, w)), int(rng.integers(0, 256)), 255, cv2.THRESH_BINARY)
    background_color = _mean(img)
    dim = max(h, w)
    xs = rng.integers(0, w, size=nb_blobs)
    ys = rng.integers(0, h, size=nb_blobs)
    lo, hi = int(dim * min_rad_ratio), int(dim * max_rad_ratio)
    radii = rng.integers(lo, hi, size=nb_blobs) if hi > lo else np.full(nb_blobs, lo)
    colors = random_colors(rng, background_color, nb_blobs)
    for x, y, r, c in zip(xs.tolist(), ys.tolist(), radii.tolist(), colors.tolist()):
        cv2.circle(img, (x, y), r, c, -1)
    k = _randint(rng, min_kernel_size, max_kernel_size)
    return cv2.blur(img, (k, k)) if k > 1 else img


def _textured_fill(rng, shape, region, background_color: int, nb_blobs: int, kernel_boundaries):
    """Blurred random texture (discs of radius < 20 on a flat level) for the box ``region``.

    ``region`` = (x0, y0, x1, y1) (exclusive ends). The texture statistics equal those of a whole
    image of ``shape`` with ``nb_blobs`` discs, but only the region is drawn (for speed).
    """
    x0, y0, x1, y1 = region
    h, w = shape[:2]
    k = _randint(rng, kernel_boundaries[0], kernel_boundaries[1])
    tex = np.full((y1 - y0, x1 - x0), random_colors(rng, background_color), np.uint8)
    n = int(round(nb_blobs * tex.size / float(h * w)))
    xs = rng.integers(0, x1 - x0, size=n)
    ys = rng.integers(0, y1 - y0, size=n)
    radii = rng.integers(0, 20, size=n)
    colors = random_colors(rng, background_color, n)
    for x, y, r, c in zip(xs.tolist(), ys.tolist(), radii.tolist(), colors.tolist()):
        cv2.circle(tex, (x, y), r, c, -1)
    return cv2.blur(tex, (k, k)) if k > 1 else tex


# --------------------------------------------------------------------------------------------
# primitives
# --------------------------------------------------------------------------------------------
def draw_lines(img: np.ndarray, rng: np.random.Generator, nb_lines: int = 10):
    """Up to ``nb_lines - 1`` non-crossing line segments; points: their visible end points."""
    img = img.copy()
    h, w = img.shape[:2]
    num = int(rng.integers(1, nb_lines))
    background_color = _mean(img)
    min_dim = min(h, w)
    starts, ends, widths = [], [], []
    for _ in range(num):
        p1 = np.array([rng.integers(w), rng.integers(h)], np.int64)
        p2 = np.array([rng.integers(w), rng.integers(h)], np.int64)
        if np.array_equal(p1, p2):
            continue
        if starts and _crossings(p1[None], p2[None], np.array(starts), np.array(ends)).any():
            continue
        col = random_colors(rng, background_color)
        thickness = max(1, _randint(rng, min_dim * 0.01, min_dim * 0.02))
        cv2.line(img, (int(p1[0]), int(p1[1])), (int(p2[0]), int(p2[1])), col, thickness)
        starts.append(p1)
        ends.append(p2)
        widths.append(thickness)
    if not starts:
        return img, _empty_points()
    a, b = np.array(starts), np.array(ends)
    points = np.stack([a, b], axis=1).reshape(-1, 2)  # both ends of line 0, then line 1, ...
    owner = np.repeat(np.arange(len(a)), 2)
    keep = _not_covered_by_later_strokes(points, owner, a, b, widths)
    return img, points[keep].astype(np.float32)


def draw_polygon(img: np.ndarray, rng: np.random.Generator, max_sides: int = 8):
    """One filled polygon (3 .. max_sides-1 corners); points: its corners."""
    img = img.copy()
    while True:
        pts, _, _ = _random_polygon(rng, img.shape, max_sides)
        if pts is not None:
            break
    col = random_colors(rng, _mean(img))
    cv2.fillPoly(img, [pts.reshape(-1, 1, 2).astype(np.int32)], col)
    return img, pts.astype(np.float32)


def draw_multiple_polygons(img: np.ndarray, rng: np.random.Generator, max_sides: int = 8,
                           nb_polygons: int = 30, nb_blobs: int = 3000, kernel_boundaries=(50, 100)):
    """Up to ``nb_polygons`` disjoint polygons filled with blurred random texture; points: corners.

    A candidate is rejected when its outline crosses an earlier one, when one's circle contains the
    other's, or when one polygon contains a vertex of the other (so no corner is ever hidden).
    ``nb_blobs`` / ``kernel_boundaries``: discs per full image and box-blur size of the texture.
    """
    img = img.copy()
    h, w = img.shape[:2]
    background_color = _mean(img)
    polygons, centers, rads = [], np.zeros((0, 2)), np.zeros(0)
    edges_a, edges_b = np.zeros((0, 2)), np.zeros((0, 2))  # outlines drawn so far
    for _ in range(nb_polygons):
        pts, center, rad = _random_polygon(rng, img.shape, max_sides)
        if pts is None:
            continue
        a, b = _edges(pts)
        if polygons:
            dist = np.linalg.norm(centers - center, axis=1)
            if (_crossings(a, b, edges_a, edges_b).any()
                    or np.any(dist + np.minimum(rad, rads) < np.maximum(rad, rads))
                    or any(_boxes_overlap(pts, prev) and (_inside_polygon(pts, prev).any()
                                                          or _inside_polygon(prev, pts).any())
                           for prev in polygons)):
                continue
        polygons.append(pts)
        centers = np.vstack([centers, center])
        rads = np.append(rads, rad)
        edges_a, edges_b = np.vstack([edges_a, a]), np.vstack([edges_b, b])
        # texture over the polygon's bounding box, with room for the blur and the discs
        margin = int(kernel_boundaries[1]) + 20
        x0, y0 = max(int(pts[:, 0].min()) - margin, 0), max(int(pts[:, 1].min()) - margin, 0)
        x1, y1 = min(int(pts[:, 0].max()) + margin + 1, w), min(int(pts[:, 1].max()) + margin + 1, h)
        tex = _textured_fill(rng, img.shape, (x0, y0, x1, y1), background_color, nb_blobs, kernel_boundaries)
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(mask, [(pts - [x0, y0]).reshape(-1, 1, 2).astype(np.int32)], 255)
        roi = img[y0:y1, x0:x1]
        np.copyto(roi, tex, where=mask.astype(bool))
    if not polygons:
        return img, _empty_points()
    return img, np.concatenate(polygons).astype(np.float32)


def draw_ellipses(img: np.ndarray, rng: np.random.Generator, nb_ellipses: int = 20):
    """Up to ``nb_ellipses`` non-overlapping filled ellipses; no interest points."""
    img = img.copy()
    h, w = img.shape[:2]
    min_dim = min(h, w) / 4
    background_color = _mean(img)
    centers = np.zeros((0, 2))
    rads = np.zeros(0)
    for _ in range(nb_ellipses):
        ax = int(max(rng.random() * min_dim, min_dim / 5))
        ay = int(max(rng.random() * min_dim, min_dim / 5))
        max_rad = max(ax, ay)
        x = _randint(rng, max_rad, w - max_rad)
        y = _randint(rng, max_rad, h - max_rad)
        if len(rads) and np.any(max_rad > np.linalg.norm(centers - [x, y], axis=1) - rads):
            continue
        centers = np.vstack([centers, [x, y]])
        rads = np.append(rads, max_rad)
        col = random_colors(rng, background_color)
        angle = rng.random() * 90
        cv2.ellipse(img, (x, y), (ax, ay), angle, 0, 360, col, -1)
    return img, _empty_points()


def draw_star(img: np.ndarray, rng: np.random.Generator, nb_branches: int = 6):
    """A star of 3 .. nb_branches-1 straight branches; points: the centre and the branch ends."""
    img = img.copy()
    h, w = img.shape[:2]
    num = int(rng.integers(3, nb_branches))
    min_dim = min(h, w)
    thickness = max(1, _randint(rng, min_dim * 0.01, min_dim * 0.02))
    ends, x, y, rad = _radial_points(rng, img.shape, num, min_rad_div=5, min_reach=0.3)
    background_color = _mean(img)
    for e in ends:
        cv2.line(img, (x, y), (int(e[0]), int(e[1])), random_colors(rng, background_color), thickness)
    center = np.array([x, y], np.int64)
    keep = _not_covered_by_later_strokes(ends, np.arange(num), np.repeat(center[None], num, 0), ends,
                                         np.full(num, thickness))
    points = np.concatenate([center[None], ends[keep]])
    return img, points[_inside(points, img.shape)].astype(np.float32)


def draw_checkerboard(img: np.ndarray, rng: np.random.Generator, max_rows: int = 7, max_cols: int = 7,
                      transform_params=(0.05, 0.15)):
    """A checkerboard warped by a random homography, plus thick lines along some grid lines.

    Points: the grid's corners and junctions that fall inside the image.
    ``transform_params`` sets the strength of the warp (see :func:`_board_homography`).
    """
    img = img.copy()
    h, w = img.shape[:2]
    background_color = _mean(img)
    rows = int(rng.integers(3, max_rows))
    cols = int(rng.integers(3, max_cols))
    s = min((w - 1) // cols, (h - 1) // rows)  # cell size
    gx, gy = np.meshgrid(np.arange(cols + 1), np.arange(rows + 1))  # row-major grid
    grid = s * np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float64)
    warped = _warp_board(rng, img.shape, grid, transform_params)

    def node(i, j):
        return warped[i * (cols + 1) + j]

    colors = np.zeros((rows, cols), np.int64)
    for i in range(rows):
        for j in range(cols):
            if i == 0 and j == 0:
                col = random_colors(rng, background_color)
            else:
                neighbours = ([colors[i - 1, j]] if i else []) + ([colors[i, j - 1]] if j else [])
                col = _different_color(rng, neighbours)
            colors[i, j] = col
            quad = np.array([node(i, j), node(i, j + 1), node(i + 1, j + 1), node(i + 1, j)], np.int32)
            cv2.fillConvexPoly(img, quad, int(col))

    # thick lines along random stretches of rows and columns of the grid
    nb_rows = int(rng.integers(2, rows + 2))
    nb_cols = int(rng.integers(2, cols + 2))
    thickness = max(1, _randint(rng, min(h, w) * 0.01, min(h, w) * 0.015))
    for _ in range(nb_rows):
        r, c1, c2 = int(rng.integers(rows + 1)), int(rng.integers(cols + 1)), int(rng.integers(cols + 1))
        p, q = node(r, c1), node(r, c2)
        cv2.line(img, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), random_colors(rng, background_color), thickness)
    for _ in range(nb_cols):
        c, r1, r2 = int(rng.integers(cols + 1)), int(rng.integers(rows + 1)), int(rng.integers(rows + 1))
        p, q = node(r1, c), node(r2, c)
        cv2.line(img, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), random_colors(rng, background_color), thickness)
    return img, warped[_inside(warped, img.shape)].astype(np.float32)


def draw_stripes(img: np.ndarray, rng: np.random.Generator, max_nb_cols: int = 13,
                 min_width_ratio: float = 0.04, transform_params=(0.1, 0.1)):
    """Vertical stripes on a board larger than the image, warped by a random homography.

    Points: the ends of the stripe boundaries (on the board's top and bottom edges) that fall
    inside the image. Stripes are at least ``min_width_ratio * min(H, W)`` wide.
    """
    img = img.copy()
    h, w = img.shape[:2]
    background_color = _mean(img)
    board_h = int(h * (1 + rng.random()))
    board_w = int(w * (1 + rng.random()))
    num = int(rng.integers(5, max_nb_cols))
    xs = np.unique(np.concatenate([board_w * rng.random(num - 1), [0, board_w - 1]]).astype(np.int64))
    min_width = min(h, w) * min_width_ratio
    xs = xs[np.diff(np.append(xs, board_w + min_width)) >= min_width]  # drop too narrow stripes
    n = len(xs) - 1  # number of stripes
    top = np.stack([xs, np.zeros_like(xs)], axis=1)
    bottom = np.stack([xs, np.full_like(xs, board_h - 1)], axis=1)
    board = np.concatenate([top, bottom]).astype(np.float64)  # n+1 top ends, then n+1 bottom ends
    warped = _warp_board(rng, img.shape, board, transform_params)
    wt, wb = warped[: n + 1], warped[n + 1:]

    color = random_colors(rng, background_color)
    for i in range(n):
        color = (color + 128 + int(rng.integers(-30, 30))) % 256
        cv2.fillConvexPoly(img, np.array([wt[i], wt[i + 1], wb[i + 1], wb[i]], np.int32), int(color))

    # thick lines along the board's top / bottom edge and along some stripe boundaries
    nb_rows = int(rng.integers(2, 5))
    nb_cols = int(rng.integers(2, n + 2))
    thickness = max(1, _randint(rng, min(h, w) * 0.01, min(h, w) * 0.015))
    for _ in range(nb_rows):
        edge = wt if rng.integers(2) == 0 else wb
        p, q = edge[int(rng.integers(n + 1))], edge[int(rng.integers(n + 1))]
        cv2.line(img, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), random_colors(rng, background_color), thickness)
    for _ in range(nb_cols):
        k = int(rng.integers(n + 1))
        cv2.line(img, (int(wt[k, 0]), int(wt[k, 1])), (int(wb[k, 0]), int(wb[k, 1])),
                 random_colors(rng, background_color), thickness)
    return img, warped[_inside(warped, img.shape)].astype(np.float32)


def _rotation(axis: int, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    if axis == 0:  # about x
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == 1:  # about y
        return np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])  # about z


def draw_cube(img: np.ndarray, rng: np.random.Generator, min_size_ratio: float = 0.2,
              rotation_range=(math.pi / 10, 4 * math.pi / 10), scale_interval=(0.4, 0.6),
              trans_interval=(0.5, 0.2)):
    """Orthographic view of a random box: its three visible faces, edges drawn in contrast.

    The box has sides ``min(H, W) * min_size_ratio + U(0, 2/3) * min(H, W)``, is rotated about z,
    x and y by angles in ``rotation_range``, scaled per axis by ``scale_interval[0] + U(0, 1) *
    scale_interval[1]`` and centred at ``size * trans_interval[0] +- size * trans_interval[1]``.
    Points: the 7 vertices that are not hidden (inside the image).
    """
    img = img.copy()
    h, w = img.shape[:2]
    background_color = _mean(img)
    min_dim = min(h, w)
    lx, ly, lz = min_dim * min_size_ratio + rng.random(3) * 2 * min_dim / 3
    # vertex k has bit 0 = x side, bit 1 = y side, bit 2 = z side
    bits = (np.arange(8)[:, None] >> np.arange(3)[None]) & 1
    cube = bits * np.array([lx, ly, lz])
    a = rotation_range[0] + rng.random(3) * (rotation_range[1] - rotation_range[0])
    scale = np.diag(scale_interval[0] + rng.random(3) * scale_interval[1])
    linear = scale @ _rotation(2, a[0]) @ _rotation(0, a[1]) @ _rotation(1, a[2])
    trans = np.array([w * trans_interval[0] + _randint(rng, -w * trans_interval[1], w * trans_interval[1]),
                      h * trans_interval[0] + _randint(rng, -h * trans_interval[1], h * trans_interval[1]), 0.0])
    cube = cube @ linear.T + trans

    # The viewer looks along -z. For each pair of opposite faces the visible one has its outward
    # normal pointing to +z; the three visible faces meet at the front vertex, the opposite
    # (back) vertex projects inside them and is hidden.
    u, v, wv = linear[:, 0], linear[:, 1], linear[:, 2]  # images of the box's axes
    orientation = np.sign(np.linalg.det(linear))
    normals = orientation * np.stack([np.cross(v, wv), np.cross(wv, u), np.cross(u, v)])  # of faces bit=1
    front_bits = (normals[:, 2] > 0).astype(np.int64)
    front = int((front_bits << np.arange(3)).sum())
    back = front ^ 7

    proj = np.rint(cube[:, :2]).astype(np.int64)
    col_face = random_colors(rng, background_color)
    faces = []
    for k in range(3):
        m, n = [i for i in range(3) if i != k]
        faces.append([front, front ^ (1 << m), front ^ (1 << m) ^ (1 << n), front ^ (1 << n)])
    for f in faces:
        cv2.fillPoly(img, [proj[f].reshape(-1, 1, 2).astype(np.int32)], col_face)
    thickness = max(1, _randint(rng, min_dim * 0.003, min_dim * 0.015))
    for f in faces:
        for j in range(4):
            col_edge = (col_face + 128 + int(rng.integers(-64, 64))) % 256  # contrasts with the faces
            p, q = proj[f[j]], proj[f[(j + 1) % 4]]
            cv2.line(img, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), int(col_edge), thickness)
    points = proj[np.arange(8) != back]
    return img, points[_inside(points, img.shape)].astype(np.float32)


def gaussian_noise(img: np.ndarray, rng: np.random.Generator):
    """Replace the image by uniform random noise; no interest points."""
    return _uniform_bytes(rng, img.shape[:2]), _empty_points()


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------
PRIMITIVE_FUNCTIONS: dict[str, Callable] = {
    "draw_lines": draw_lines,
    "draw_polygon": draw_polygon,
    "draw_multiple_polygons": draw_multiple_polygons,
    "draw_ellipses": draw_ellipses,
    "draw_star": draw_star,
    "draw_checkerboard": draw_checkerboard,
    "draw_stripes": draw_stripes,
    "draw_cube": draw_cube,
    "gaussian_noise": gaussian_noise,
}
PRIMITIVES = tuple(PRIMITIVE_FUNCTIONS)
PARAMETRISED = ("generate_background",) + PRIMITIVES  # functions with data.generation.params


def _function(name: str) -> Callable:
    return generate_background if name == "generate_background" else PRIMITIVE_FUNCTIONS[name]


def default_params(name: str) -> dict:
    """Keyword defaults of a primitive (or of ``generate_background``), tuples as lists."""
    sig = inspect.signature(_function(name))
    out = {}
    for p in sig.parameters.values():
        if p.default is not inspect.Parameter.empty:
            out[p.name] = list(p.default) if isinstance(p.default, tuple) else p.default
    return out


def resolve_params(params: Mapping | None) -> dict:
    """Complete ``data.generation.params`` with the functions' defaults; unknown names are errors."""
    params = dict(params or {})
    out = {}
    for name in PARAMETRISED:
        defaults = default_params(name)
        given = dict(params.pop(name, None) or {})
        unknown = sorted(set(given) - set(defaults))
        if unknown:
            raise ValueError(f"data.generation.params.{name}: unknown parameter(s) {', '.join(unknown)} "
                             f"(known: {', '.join(defaults) or 'none'})")
        out[name] = {**defaults, **{k: list(v) if isinstance(v, tuple) else v for k, v in given.items()}}
    if params:
        raise ValueError(f"data.generation.params: unknown function(s) {', '.join(sorted(params))} "
                         f"(known: {', '.join(PARAMETRISED)})")
    return out


def draw(name: str, img: np.ndarray, rng: np.random.Generator, params: Mapping | None = None):
    """Draw primitive ``name`` on ``img`` -> (image, N x 2 float32 points)."""
    if name not in PRIMITIVE_FUNCTIONS:
        raise ValueError(f"unknown primitive {name!r} (expected one of {', '.join(PRIMITIVES)})")
    return PRIMITIVE_FUNCTIONS[name](img, rng, **(params or {}))
