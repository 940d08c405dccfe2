"""Small numerical helpers in the NumPy documentation style.

Nothing here is marked with a function marker, so every public
top-level function is exported.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

EPS = np.finfo(np.float64).eps


def moving_average(values: ArrayLike, window: int = 3, *, mode: str = "valid") -> NDArray[np.float64]:
    """
    Compute the moving average of a one-dimensional sequence.

    Parameters
    ----------
    values : array_like
        Input samples.
    window : int, optional
        Number of samples per window (default 3).
    mode : {'valid', 'same', 'full'}
        Passed to :func:`numpy.convolve`.

    Returns
    -------
    numpy.ndarray
        The averaged samples.
    """
    kernel = np.ones(window) / window
    return np.convolve(np.asarray(values, dtype=float), kernel, mode=mode)


def normalize(x: NDArray[np.float64], axis: int | None = None, ord: float = 2.0, eps: float = EPS) -> NDArray[np.float64]:
    """Scale `x` to unit norm along `axis`.

    Examples
    --------
    >>> normalize(np.array([3.0, 4.0]))
    array([0.6, 0.8])
    """
    norm = np.linalg.norm(x, ord=ord, axis=axis, keepdims=True)
    return x / np.maximum(norm, eps)


def _check_window(window):
    if window < 1:
        raise ValueError("window must be positive")


def histogram_edges(data, bins=10, range=None, weights=None, density=False):
    r"""Return the bin edges :math:`e_0 < e_1 < \dots < e_n`.

    Notes
    -----
    Thin wrapper over :func:`numpy.histogram_bin_edges`.
    """
    return np.histogram_bin_edges(data, bins=bins, range=range, weights=weights)


def clip_outliers(a, /, lo=-3.0, hi=+3.0, *, inplace=False, dtype=np.float32):
    '''Clip values outside ``[lo, hi]`` standard deviations.'''
    z = (a - a.mean()) / a.std()
    out = a if inplace else a.astype(dtype)
    out[z < lo] = lo
    out[z > hi] = hi
    return out
