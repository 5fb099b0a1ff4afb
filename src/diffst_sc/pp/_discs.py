"""Means of per-pixel quantities over discs, read at chosen centres.

A disc's mean is a normalised convolution with an anti-aliased disc, sampled bilinearly at the
centre. Where the centres are sparse beside the pixels (a grid a few times coarser than the
smallest disc), the convolution is evaluated at the pixels around each centre alone; where
they are dense, by FFT over the whole window. Both give the same numbers (to float rounding).
"""

from __future__ import annotations

import numpy as np

#: Working pixels a disc's radius spans at least: a disc of twice as many or more is read on
#: working pixels coarsened by the whole factor that brings it to 6-12, which costs a disc of
#: any size about the same and softens its rim by up to a sixth of its radius (her2st quality
#: unchanged: single-section mean wPCC 0.423 before and after).
DISC_RADIUS_PIXELS = 6

#: Seconds per kernel tap and plane of the convolution evaluated around one centre, over
#: seconds per pixel and plane of an FFT convolution (both measured on 2 cores): the direct
#: evaluation is chosen where it is cheaper.
_DIRECT_OVER_FFT = 1.8 / 14.0

#: Values gathered at a time by the direct evaluation (bounds its memory, about 4 bytes each).
_GATHER = 2**24


def coarsening(radius_um: float, pixel_um: float) -> int:
    """Working pixels per side of the blocks a disc of ``radius_um`` is read on (1: none)."""
    return max(1, int(radius_um / pixel_um / DISC_RADIUS_PIXELS))


def disc_reach_um(radius_um: float, pixel_um: float) -> float:
    """How far (um) from a centre the working pixels that set its disc mean can lie.

    The disc's rim, the anti-aliasing (under half a block), the bilinear read between blocks
    and the centre's own block: a window that holds this much around a centre, starting on a
    whole block, gives the same mean as any larger window.
    """
    k = coarsening(radius_um, pixel_um)
    return max(radius_um, 0.5 * k * pixel_um) + 2.0 * k * pixel_um


def _disc_kernel(radius: float) -> np.ndarray:
    """A disc of ``radius`` working pixels, anti-aliased by 4 x 4 supersampling."""
    n = int(np.ceil(radius)) + 1
    offs = (np.arange(4) + 0.5) / 4 - 0.5
    y, x = np.mgrid[-n:n + 1, -n:n + 1].astype(float)
    k = np.zeros_like(y)
    for dy in offs:
        for dx in offs:
            k += ((y + dy) ** 2 + (x + dx) ** 2) <= radius**2
    return k / 16


def _block_mean(a: np.ndarray, k: int) -> np.ndarray:
    """float32 mean over ``k x k`` blocks of the last two axes, whose sizes are multiples of ``k``.

    Strided sums (one pass per offset) rather than a reduction over a reshaped view, which
    numpy runs about five times slower; booleans are counted in bytes (exact, and a quarter of
    the memory traffic of floats).
    """
    if k == 1:
        return a.astype(np.float32, copy=False)
    counts = a.dtype == bool and k * k < 256
    cols = a[..., 0::k].astype(np.uint8 if counts else np.float32)
    for j in range(1, k):
        cols += a[..., j::k]
    out = cols[..., 0::k, :].copy()
    for i in range(1, k):
        out += cols[..., i::k, :]
    return out * np.float32(1.0 / (k * k))


def _coarse(a: np.ndarray, k: int) -> np.ndarray:
    """Block means of ``(h, w)`` over ``k x k`` blocks, padded with zeros to whole blocks."""
    h, w = a.shape
    if k > 1 and (h % k or w % k):
        a = np.pad(a, ((0, -h % k), (0, -w % k)))
    return _block_mean(a, k)


def coarse_planes(q, k: int) -> np.ndarray:
    """``q.values`` as block means over ``k x k`` working pixels (zeros pad the last blocks).

    Kept on ``q`` for its other discs, and each made from the coarsest one kept whose blocks
    divide its own (a mean of block means is the block mean): the discs of a window read its
    planes about once, not once per disc.
    """
    if k == 1:
        return q.values
    kept = q.coarse
    if k not in kept:
        base = max((j for j in kept if k % j == 0), default=1)
        src = q.values if base == 1 else kept[base]
        out = None
        for i, v in enumerate(src):
            c = _coarse(v, k // base)
            if out is None:
                out = np.empty((len(src), *c.shape), np.float32)
            out[i] = c
        kept[k] = out
    return kept[k]


def _coarse_ones(h: int, w: int, k: int) -> np.ndarray:
    """The block means of a ``(h, w)`` window of ones: each block's share inside the window."""
    return np.outer(_shares(h, k), _shares(w, k)).astype(np.float32)


def _shares(n: int, k: int) -> np.ndarray:
    """The share of each of the ``ceil(n / k)`` blocks of ``k`` that lies within ``n``."""
    return np.minimum(n - np.arange(-(-n // k)) * k, k) / k


def disc_means(q, centres_px: np.ndarray, radius_um: float) -> np.ndarray:
    """``(n, Q)`` mean of each quantity over the disc of ``radius_um`` around each centre.

    ``q`` is a :class:`~diffst_sc.pp.StainQuantities`. The image window's edge is handled by
    normalised convolution: a disc partly outside the window averages what is inside. A disc
    wider than :data:`DISC_RADIUS_PIXELS` working pixels is read on working pixels coarsened by
    a whole factor (block means, :func:`coarsening`) when its radius spans twice that or more,
    so that its kernel stays about that size.
    """
    k = coarsening(radius_um, q.pixel_um)
    kernel = _disc_kernel(max(radius_um / (k * q.pixel_um), 0.5))
    h, w = q.values.shape[1:]
    hc, wc = -(-h // k), -(-w // k)
    at = q.to_working(centres_px, k)
    m = kernel.shape[0]
    fft_pixels = (hc + m - 1) * (wc + m - 1)
    planes = coarse_planes(q, k)
    if len(centres_px) * (m + 1) ** 2 * _DIRECT_OVER_FFT < fft_pixels:
        sums, norm = _direct_sums(planes, (h, w), k, kernel, at)
    else:
        sums, norm = _fft_sums(planes, (h, w), k, kernel, at)
    return sums / np.maximum(norm, 1e-6)[:, None]


def _fft_sums(planes: np.ndarray, size: tuple[int, int], k: int, kernel: np.ndarray,
              at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Disc sums of every plane and of the window's ones, by FFT, sampled at ``at``.

    ``planes`` are the window's planes (``size`` working pixels) coarsened by ``k``. One plane
    at a time (memory stays that of one plane), each transform on every core; the kernel's
    transform is made once for all planes.
    """
    from scipy import fft, ndimage

    m, r = kernel.shape[0], kernel.shape[0] // 2
    hc, wc = planes.shape[1:]
    shape = [fft.next_fast_len(s + m - 1, True) for s in (hc, wc)]

    with fft.set_workers(_fft_workers()):
        spectrum = fft.rfft2(kernel, shape)

        def sampled(plane):
            conv = fft.irfft2(fft.rfft2(plane, shape) * spectrum, shape)[r:r + hc, r:r + wc]
            return ndimage.map_coordinates(conv, at, order=1, mode="nearest")

        norm = sampled(_coarse_ones(*size, k))
        out = np.empty((at.shape[1], len(planes)), np.float64)
        for i, v in enumerate(planes):
            out[:, i] = sampled(v)
    return out, norm


def _direct_sums(planes: np.ndarray, size: tuple[int, int], k: int, kernel: np.ndarray,
                 at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Disc sums of every plane and of the window's ones, at ``at``, from the pixels around it.

    What :func:`_fft_sums` gives: the convolution at the (up to) four blocks around each centre,
    combined bilinearly as ``scipy.ndimage.map_coordinates(order=1, mode="nearest")`` does, the
    four folded into one kernel per centre. Blocks outside the window count as zeros, and a
    block cut by its edge as the share of it inside (the window's ones, coarsened).
    """
    from numpy.lib.stride_tricks import sliding_window_view

    hc, wc = planes.shape[1:]
    m, r = kernel.shape[0], kernel.shape[0] // 2
    # the window's ones, coarsened: separable, each row's and column's share inside
    row_share, col_share = _shares(size[0], k), _shares(size[1], k)
    y0, fy = _corner(at[0], hc)
    x0, fx = _corner(at[1], wc)
    frames = np.zeros((2, 2, m + 1, m + 1))  # the kernel at each corner's offset
    for dy in (0, 1):
        for dx in (0, 1):
            frames[dy, dx, dy:dy + m, dx:dx + m] = kernel
    n, n_planes = len(y0), len(planes)
    top, left = y0 - r, x0 - r  # the first block each centre reads
    inside = (top >= 0) & (left >= 0) & (top + m < hc) & (left + m < wc)
    windows = sliding_window_view(planes, (m + 1, m + 1), axis=(1, 2)) if inside.any() else None
    sums, norm = np.empty((n, n_planes)), np.empty(n)
    step = max(1, _GATHER // (n_planes * (m + 1) ** 2))
    offsets = np.arange(m + 1)
    for s in range(0, n, step):
        sl = slice(s, min(n, s + step))
        wy = np.stack([1 - fy[sl], fy[sl]], 1)
        wx = np.stack([1 - fx[sl], fx[sl]], 1)
        rows, cols = top[sl, None] + offsets, left[sl, None] + offsets
        ok_r, ok_c = (rows >= 0) & (rows < hc), (cols >= 0) & (cols < wc)
        rows, cols = np.clip(rows, 0, hc - 1), np.clip(cols, 0, wc - 1)
        kern = np.einsum("cy,cx,yxab->cab", wy, wx, frames)
        kern *= (ok_r[:, :, None] & ok_c[:, None, :])
        norm[sl] = np.einsum("cab,ca,cb->c", kern, row_share[rows], col_share[cols])
        inner = inside[sl]
        # (c, Q, taps) gathered as sliding windows where the whole frame is inside, else by index
        patches = np.empty((len(rows), n_planes, (m + 1) ** 2), np.float32)
        if inner.any():
            patches[inner] = np.moveaxis(windows[:, top[sl][inner], left[sl][inner]], 0, 1
                                         ).reshape(int(inner.sum()), n_planes, -1)
        if not inner.all():
            rr, cc = rows[~inner], cols[~inner]
            patches[~inner] = np.moveaxis(planes[:, rr[:, :, None], cc[:, None, :]], 0, 1
                                          ).reshape(len(rr), n_planes, -1)
        flat = kern.reshape(len(kern), -1, 1).astype(np.float32)
        sums[sl] = np.matmul(patches, flat)[..., 0]
    return sums, norm


def _corner(x: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The lower of the two blocks a bilinear read at ``x`` mixes, and the upper one's weight.

    As ``map_coordinates(mode="nearest")``: a position past either end reads the end block.
    """
    x = np.clip(np.asarray(x, np.float64), 0, size - 1)
    lo = np.minimum(np.floor(x), max(size - 2, 0)).astype(np.int64)
    return lo, x - lo


def _fft_workers() -> int:
    """Threads for scipy's FFTs: the cores this process may use."""
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
