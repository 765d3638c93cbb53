"""Tiny numpy rasterizer shared by the ``rgb_array`` renderers of the toy environments (no pygame needed)."""

import math

import numpy as np


def blank_canvas(size: int, color: tuple[int, int, int]) -> np.ndarray:
    """
    A ``(size, size, 3)`` uint8 image filled with ``color``.

    :param size: side of the square image, in pixels
    :param color: RGB fill colour
    :return: the image
    """
    canvas = np.empty((size, size, 3), dtype=np.uint8)
    canvas[...] = np.asarray(color, dtype=np.uint8)
    return canvas


def draw_disc(canvas: np.ndarray, row: float, col: float, radius: float, color: tuple[int, int, int]) -> None:
    """
    Paint a filled disc in place.

    :param canvas: ``(H, W, 3)`` uint8 image, modified in place
    :param row: centre row, in pixels (may be fractional or off-canvas)
    :param col: centre column, in pixels
    :param radius: radius in pixels (at least one pixel is painted if the centre is on the canvas)
    :param color: RGB colour
    """
    height, width = canvas.shape[:2]
    rows, cols = np.ogrid[:height, :width]
    # a pixel's centre is at most sqrt(0.5) from any point of its square: that radius always reaches one
    mask = (rows - row) ** 2 + (cols - col) ** 2 <= max(radius, math.sqrt(0.5)) ** 2
    canvas[mask] = np.asarray(color, dtype=np.uint8)
