"""One calibrated P(same individual) for a (query, candidate) pair, and the two thresholds the app shows.

Inputs per candidate (:func:`candidate_features`): the local scores of :class:`LocalResult`
(log1p LNBNN votes, log1p verified inliers, and how far each stands above the best other
candidate: the rank gap), plus any extra per-candidate score the caller has (e.g. the embedding
head's score when a trained bundle is active).

The model is a logistic regression fitted by maximum likelihood with a weak L2 penalty
(a unit Gaussian prior on the standardised weights; scipy.optimize, L-BFGS, analytic gradient). Logistic rather than isotonic: there are several
inputs (isotonic calibrates one score), a catalog's confirmed pairs number in the tens to hundreds
(isotonic's steps overfit that; a 4-6 parameter logistic does not), and its output is smooth and
monotone in each score. scikit-learn is not a dependency for one 30-line fit.

Thresholds, measured on the fitting data by cross-validation (folds by query, so no query's pairs
are scored by a model that saw them):

- ``best_match_threshold``: the lowest probability p such that, over the queries whose top
  candidate scores at least p, the top candidate is right for at least ``precision`` (95%) of them.
  None when no threshold reaches it (then the app never says "Best match").
- ``new_individual_threshold``: the top candidate's probability below which the app suggests
  "probably a new individual": the ``new_rate`` (5%) quantile of the top candidate's probability
  over queries whose individual is in the gallery, so about 5% of matchable queries get the
  suggestion; how many unmatched photos get it is measured, not assumed (bench/bench_local.py).
  Never above ``best_match_threshold``.

Also: the expected calibration error (:func:`expected_calibration_error`) and a reliability
diagram drawn with OpenCV (:func:`write_reliability_diagram`; matplotlib is not a dependency).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy.optimize import minimize

from model.errors import DataError
from model.local.index import LocalResult

CALIBRATION_VERSION = 1
LOCAL_FEATURES = ("log_votes", "log_inliers", "vote_gap", "inlier_gap")
DEFAULT_PRECISION = 0.95
DEFAULT_NEW_RATE = 0.05
# L2 penalty as a Gaussian prior of variance 1/DEFAULT_L2 on the standardised weights (summed, not
# averaged, over pairs: it matters only when pairs are few or the classes perfectly separated).
DEFAULT_L2 = 1.0
DEFAULT_FOLDS = 5
# The default shipped with the app: fitted on synthetic flukes only (bench/bench_local.py
# --write-default-calibration), never on ../shared/data; the catalog's own calibration replaces it.
DEFAULT_CALIBRATION_FILE = Path(__file__).resolve().parents[2] / "resources" / "models" / "local" / "calibration.json"


def candidate_features(result: LocalResult, extra: dict[str, Sequence[float]] | None = None) -> tuple[np.ndarray, list[str]]:
    """Per-candidate inputs [n_candidates, F] and their names (LOCAL_FEATURES, then sorted extras).

    Args:
        result: a query's ranked candidates.
        extra: name -> one value per candidate (same order), e.g. {"embedding": head scores}.
    """
    extra = extra or {}
    names = list(LOCAL_FEATURES) + sorted(extra)
    n = len(result.candidates)
    x = np.zeros((n, len(names)))
    if n == 0:
        return x, names
    votes = np.log1p([max(c.votes, 0.0) for c in result.candidates])
    inl = np.log1p([c.inliers for c in result.candidates])
    x[:, 0], x[:, 1] = votes, inl
    for col, v in ((2, votes), (3, inl)):
        for i in range(n):
            others = np.delete(v, i)
            x[i, col] = v[i] - (others.max() if len(others) else 0.0)
    for j, name in enumerate(sorted(extra), start=len(LOCAL_FEATURES)):
        vals = np.asarray(extra[name], float)
        if vals.shape != (n,):
            raise ValueError(f"extra score {name!r} has {vals.shape} values for {n} candidates")
        x[:, j] = vals
    return x, names


@dataclass
class CalibrationPairs:
    """(query, candidate) pairs with known truth, for :meth:`Calibrator.fit`.

    Attributes:
        X: [n, F] inputs; y: [n] 1 where the candidate is the query's individual.
        feature_names: the F input names.
        query: [n] the query each pair came from (for cross-validation folds).
        rank: [n] the candidate's rank (1 = top).
        matchable: [n] True where the query's individual is in the gallery (at any rank).
    """

    X: np.ndarray
    y: np.ndarray
    feature_names: list[str]
    query: np.ndarray
    rank: np.ndarray
    matchable: np.ndarray

    @property
    def top(self) -> np.ndarray:
        return self.rank == 1


def calibration_pairs(results: Sequence[LocalResult], truths: Sequence[object | None], *,
                      matchable: Sequence[bool] | None = None,
                      extras: Sequence[dict[str, Sequence[float]]] | None = None) -> CalibrationPairs:
    """Pairs from ranked results with known truth.

    Args:
        results: one LocalResult per query.
        truths: each query's true individual id; None for an unidentified or new individual (all
            its pairs are negatives).
        matchable: whether each query's individual has photos in the gallery (default: it appears
            among its candidates).
        extras: per query, the extra per-candidate scores (see :func:`candidate_features`).
    """
    if len(results) != len(truths):
        raise ValueError(f"{len(results)} results but {len(truths)} truths")
    xs, ys, qs, ranks, match = [], [], [], [], []
    names = None
    for q, (res, truth) in enumerate(zip(results, truths)):
        x, names_q = candidate_features(res, extras[q] if extras else None)
        if names is None:
            names = names_q
        elif names_q != names:
            raise ValueError(f"query {q}: inputs {names_q} differ from the first query's {names}")
        y = np.array([truth is not None and c.individual_id == truth for c in res.candidates], float)
        m = bool(matchable[q]) if matchable is not None else bool(y.any())
        xs.append(x)
        ys.append(y)
        qs.append(np.full(len(y), q))
        ranks.append(np.arange(1, len(y) + 1))
        match.append(np.full(len(y), m))
    names = names or list(LOCAL_FEATURES)

    def cat(parts, dtype):
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

    x = np.concatenate(xs) if xs else np.zeros((0, len(names)))
    return CalibrationPairs(x, cat(ys, float), names, cat(qs, np.int64), cat(ranks, np.int64), cat(match, bool))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _fit_logistic(xs: np.ndarray, y: np.ndarray, l2: float) -> np.ndarray:
    """Weights [F + 1] (intercept last) of an L2-penalised logistic regression on standardised xs
    (penalty ``l2 / 2 * |w|^2`` against the summed log-likelihood; the intercept is not penalised)."""
    n, f = xs.shape
    a = np.hstack([xs, np.ones((n, 1))])

    def loss(w):
        z = a @ w
        # log(1 + e^z) - y z, computed stably
        nll = np.sum(np.logaddexp(0.0, z) - y * z) / n
        grad = a.T @ (_sigmoid(z) - y) / n
        pen = 0.5 * l2 / n * np.sum(w[:f] ** 2)
        grad[:f] += l2 / n * w[:f]
        return nll + pen, grad

    res = minimize(loss, np.zeros(f + 1), jac=True, method="L-BFGS-B")
    return res.x


def expected_calibration_error(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """ECE: the mean |observed frequency - mean probability| over equal-width bins, weighted by count."""
    p, y = np.asarray(p, float), np.asarray(y, float)
    if len(p) == 0:
        return 0.0
    b = np.minimum((p * bins).astype(int), bins - 1)
    ece = 0.0
    for i in range(bins):
        m = b == i
        if m.any():
            ece += m.sum() / len(p) * abs(y[m].mean() - p[m].mean())
    return float(ece)


def best_match_threshold(p_top: np.ndarray, correct_top: np.ndarray, precision: float = DEFAULT_PRECISION,
                         min_support: int = 5) -> float | None:
    """Lowest p such that the top candidates scoring >= p are right for >= ``precision`` of them
    (at least ``min_support`` of them); None when no p does."""
    p_top, correct_top = np.asarray(p_top, float), np.asarray(correct_top, float)
    order = np.argsort(-p_top, kind="stable")
    ps, cs = p_top[order], correct_top[order]
    prec = np.cumsum(cs) / np.arange(1, len(cs) + 1)
    best = None
    for i in range(len(ps)):
        # only cut between distinct probabilities (everything tied with ps[i] is in)
        if i + 1 < len(ps) and ps[i + 1] == ps[i]:
            continue
        if i + 1 >= min_support and prec[i] >= precision:
            best = float(ps[i])
    return best


class Calibrator:
    """Logistic calibration of candidate inputs to P(same individual), with the app's two thresholds."""

    def __init__(self) -> None:
        self.feature_names: list[str] = []
        self.mean = np.zeros(0)
        self.scale = np.ones(0)
        self.weights = np.zeros(1)
        self.n_pairs = 0
        self.n_positive = 0
        self.best_match_threshold: float | None = None
        self.new_individual_threshold: float | None = None
        self.precision_target = DEFAULT_PRECISION
        self.new_rate = DEFAULT_NEW_RATE
        self.l2 = DEFAULT_L2
        self.source = ""
        self.created = ""
        self.cv_proba: np.ndarray | None = None

    @property
    def fitted(self) -> bool:
        return bool(self.feature_names)

    def _raw_fit(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        mean = x.mean(axis=0)
        scale = x.std(axis=0)
        scale[scale < 1e-9] = 1.0
        return mean, scale, _fit_logistic((x - mean) / scale, y, self.l2)

    def fit(self, X: np.ndarray, y: np.ndarray, feature_names: Sequence[str], *, groups: np.ndarray | None = None,
            top: np.ndarray | None = None, matchable: np.ndarray | None = None, folds: int = DEFAULT_FOLDS,
            precision: float = DEFAULT_PRECISION, new_rate: float = DEFAULT_NEW_RATE, l2: float = DEFAULT_L2,
            source: str = "") -> Calibrator:
        """Fit on pairs; with ``top`` (and ``matchable``) also set the thresholds by cross-validation.

        Args:
            X: [n, F] inputs; y: [n] 0/1 labels.
            feature_names: the F input names (checked again at prediction).
            groups: [n] query of each pair: cross-validation folds keep a query's pairs together
                (default: each pair its own group).
            top: [n] True for each query's top candidate (the banner's pairs).
            matchable: [n] True where the query's individual is in the gallery.
            folds: cross-validation folds for the thresholds.
            precision: the banner's precision target.
            new_rate: share of matchable queries that may be suggested as new.
            l2: L2 penalty on the standardised weights.
            source: a note saved with the calibration (what it was fitted on).

        Raises:
            DataError: too few pairs, or only one class.
        """
        x = np.asarray(X, float)
        y = np.asarray(y, float)
        if x.ndim != 2 or x.shape[0] != len(y) or x.shape[1] != len(feature_names):
            raise ValueError(f"X {x.shape}, y {y.shape} and {len(feature_names)} feature names do not agree")
        n_pos = int(y.sum())
        if n_pos < 2 or len(y) - n_pos < 2:
            raise DataError(f"calibration needs at least 2 matching and 2 non-matching pairs; "
                            f"got {n_pos} and {len(y) - n_pos}")
        self.l2 = l2
        self.feature_names = list(feature_names)
        self.mean, self.scale, self.weights = self._raw_fit(x, y)
        self.n_pairs, self.n_positive = len(y), n_pos
        self.precision_target, self.new_rate = precision, new_rate
        self.source = source
        self.created = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        self.cv_proba = self._cross_validated(x, y, groups, folds)
        if top is not None:
            self.set_thresholds(self.cv_proba, y, np.asarray(top, bool),
                                None if matchable is None else np.asarray(matchable, bool))
        return self

    def _cross_validated(self, x: np.ndarray, y: np.ndarray, groups, folds: int) -> np.ndarray:
        groups = np.arange(len(y)) if groups is None else np.asarray(groups)
        uniq = np.unique(groups)
        rng = np.random.default_rng(0)
        fold_of = dict(zip(uniq, rng.permutation(len(uniq)) % max(2, min(folds, len(uniq)))))
        f = np.array([fold_of[g] for g in groups])
        out = np.empty(len(y))
        for k in np.unique(f):
            tr, te = f != k, f == k
            if y[tr].min() == y[tr].max():  # one class in the training folds: fall back to the full fit
                out[te] = self.predict_proba(x[te])
                continue
            mean, scale, w = self._raw_fit(x[tr], y[tr])
            out[te] = _sigmoid(np.hstack([(x[te] - mean) / scale, np.ones((te.sum(), 1))]) @ w)
        return out

    def set_thresholds(self, p: np.ndarray, y: np.ndarray, top: np.ndarray, matchable: np.ndarray | None = None) -> None:
        """Set both thresholds from (held-out) probabilities ``p`` of the pairs (see the module docstring)."""
        p_top, y_top = p[top], y[top]
        self.best_match_threshold = best_match_threshold(p_top, y_top, self.precision_target)
        m = matchable[top] if matchable is not None else np.ones(len(p_top), bool)
        if m.any():
            t = float(np.quantile(p_top[m], self.new_rate))
            if self.best_match_threshold is not None:
                t = min(t, self.best_match_threshold)
            self.new_individual_threshold = t
        else:
            self.new_individual_threshold = None

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """P(same individual) for each row of X (columns in ``feature_names`` order)."""
        if not self.fitted:
            raise RuntimeError("the calibrator is not fitted")
        x = np.atleast_2d(np.asarray(X, float))
        if x.shape[1] != len(self.feature_names):
            raise ValueError(f"X has {x.shape[1]} columns; this calibration takes {len(self.feature_names)} "
                             f"({', '.join(self.feature_names)})")
        z = np.hstack([(x - self.mean) / self.scale, np.ones((len(x), 1))]) @ self.weights
        return _sigmoid(z)

    def probabilities(self, result: LocalResult, extra: dict[str, Sequence[float]] | None = None) -> np.ndarray:
        """P(same individual) of each candidate of a result (the inputs must match the fitted ones)."""
        x, names = candidate_features(result, extra)
        if names != self.feature_names:
            raise ValueError(f"result gives inputs {names}; this calibration takes {self.feature_names}")
        return self.predict_proba(x) if len(x) else np.zeros(0)

    def verdict(self, p_top: float) -> str:
        """"best_match", "new_individual" or "uncertain" for a query's top candidate probability."""
        if self.best_match_threshold is not None and p_top >= self.best_match_threshold:
            return "best_match"
        if self.new_individual_threshold is not None and p_top < self.new_individual_threshold:
            return "new_individual"
        return "uncertain"

    def to_dict(self) -> dict:
        """JSON-ready: version, inputs, weights, thresholds and what it was fitted on."""
        if not self.fitted:
            raise RuntimeError("the calibrator is not fitted")
        return {"kind": "logistic", "version": CALIBRATION_VERSION, "feature_names": list(self.feature_names),
                "mean": [float(v) for v in self.mean], "scale": [float(v) for v in self.scale],
                "coef": [float(v) for v in self.weights[:-1]], "intercept": float(self.weights[-1]),
                "n_pairs": int(self.n_pairs), "n_positive": int(self.n_positive),
                "best_match_threshold": self.best_match_threshold,
                "new_individual_threshold": self.new_individual_threshold,
                "precision_target": self.precision_target, "new_rate": self.new_rate, "l2": self.l2,
                "source": self.source, "created": self.created}

    @classmethod
    def from_dict(cls, d: dict) -> Calibrator:
        """Inverse of :meth:`to_dict`.

        Raises:
            DataError: not a calibration, another version, or inconsistent/missing values.
        """
        if not isinstance(d, dict) or d.get("kind") != "logistic":
            raise DataError("not a local-feature calibration (expected kind 'logistic')")
        if d.get("version") != CALIBRATION_VERSION:
            raise DataError(f"calibration version {d.get('version')!r} is not supported (this program reads "
                            f"version {CALIBRATION_VERSION}; refit it)")
        try:
            names = [str(n) for n in d["feature_names"]]
            mean = np.asarray(d["mean"], float)
            scale = np.asarray(d["scale"], float)
            coef = np.asarray(d["coef"], float)
            intercept = float(d["intercept"])
            thresholds = [d.get("best_match_threshold"), d.get("new_individual_threshold")]
            thresholds = [None if t is None else float(t) for t in thresholds]
            n_pairs, n_positive = int(d["n_pairs"]), int(d["n_positive"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"calibration is missing or has a bad value: {exc}") from None
        f = len(names)
        if not names or not (mean.shape == scale.shape == coef.shape == (f,)):
            raise DataError(f"calibration has {f} inputs but {mean.shape}, {scale.shape}, {coef.shape} values")
        values = np.concatenate([mean, scale, coef, [intercept]])
        if not np.all(np.isfinite(values)) or np.any(scale <= 0):
            raise DataError("calibration has non-finite values or a non-positive scale")
        if any(t is not None and not (0.0 <= t <= 1.0) for t in thresholds):
            raise DataError(f"calibration thresholds {thresholds} are not probabilities")
        c = cls()
        c.feature_names, c.mean, c.scale = names, mean, scale
        c.weights = np.concatenate([coef, [intercept]])
        c.best_match_threshold, c.new_individual_threshold = thresholds
        c.n_pairs, c.n_positive = n_pairs, n_positive
        c.precision_target = float(d.get("precision_target", DEFAULT_PRECISION))
        c.new_rate = float(d.get("new_rate", DEFAULT_NEW_RATE))
        c.l2 = float(d.get("l2", DEFAULT_L2))
        c.source, c.created = str(d.get("source", "")), str(d.get("created", ""))
        return c


def load_calibrator(path: str | Path) -> Calibrator:
    """A calibration saved as JSON (:meth:`Calibrator.to_dict`).

    Raises:
        DataError: naming the file: missing, not JSON, or not a valid calibration.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: calibration file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot read the calibration ({exc})") from None
    try:
        return Calibrator.from_dict(data)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None


def save_calibrator(cal: Calibrator, path: str | Path) -> None:
    """Write :meth:`Calibrator.to_dict` as JSON (via a temporary file, so a crash leaves the old one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(cal.to_dict(), indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)


def default_calibrator() -> Calibrator | None:
    """The synthetic-only default calibration shipped in resources/, or None when there is none."""
    if not DEFAULT_CALIBRATION_FILE.is_file():
        return None
    return load_calibrator(DEFAULT_CALIBRATION_FILE)


# --- reliability diagram ---------------------------------------------------------------------

def reliability_bins(p: np.ndarray, y: np.ndarray, bins: int = 10) -> list[tuple[float, float, int]]:
    """Per equal-width bin: (mean probability, observed frequency, count); empty bins are left out."""
    p, y = np.asarray(p, float), np.asarray(y, float)
    b = np.minimum((p * bins).astype(int), bins - 1)
    return [(float(p[b == i].mean()), float(y[b == i].mean()), int((b == i).sum())) for i in range(bins) if (b == i).any()]


def write_reliability_diagram(path, p: np.ndarray, y: np.ndarray, *, bins: int = 10, title: str = "",
                              size: int = 520) -> None:
    """A PNG reliability diagram: observed frequency against predicted probability per bin (dots sized by
    count and labelled with it, bars to the diagonal show the gap), the diagonal, a histogram of
    probabilities, and the ECE."""
    margin, top = 60, 40
    plot = size - margin - 20
    img = np.full((size + 90, size, 3), 255, np.uint8)

    def xy(px: float, py: float) -> tuple[int, int]:
        return int(margin + px * plot), int(top + (1 - py) * plot)

    cv2.rectangle(img, xy(0, 0), xy(1, 1), (0, 0, 0), 1)
    for t in np.linspace(0, 1, 6):
        cv2.line(img, xy(t, 0), xy(t, 1), (225, 225, 225), 1)
        cv2.line(img, xy(0, t), xy(1, t), (225, 225, 225), 1)
        cv2.putText(img, f"{t:.1f}", (xy(t, 0)[0] - 12, xy(t, 0)[1] + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
        cv2.putText(img, f"{t:.1f}", (margin - 32, xy(0, t)[1] + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    cv2.line(img, xy(0, 0), xy(1, 1), (160, 160, 160), 1, cv2.LINE_AA)
    data = reliability_bins(p, y, bins)
    n_max = max((c for _, _, c in data), default=1)
    for mp, fy, c in data:
        cv2.line(img, xy(mp, mp), xy(mp, fy), (60, 60, 220), 2, cv2.LINE_AA)
        cv2.circle(img, xy(mp, fy), int(3 + 9 * math.sqrt(c / n_max)), (180, 90, 30), -1, cv2.LINE_AA)
        px, py = xy(mp, fy)
        cv2.putText(img, str(c), (px + 8, py + (14 if fy > 0.9 else -8)), cv2.FONT_HERSHEY_SIMPLEX, 0.38,
                    (90, 90, 90), 1, cv2.LINE_AA)
    # histogram of probabilities under the plot
    hist, _ = np.histogram(np.asarray(p, float), bins=bins, range=(0, 1))
    base = top + plot + 75
    for i, h in enumerate(hist):
        hh = int(40 * h / max(hist.max(), 1))
        cv2.rectangle(img, (int(margin + i / bins * plot) + 1, base - hh), (int(margin + (i + 1) / bins * plot) - 1, base),
                      (150, 150, 150), -1)
    cv2.putText(img, "predicted P(same individual)", (margin + plot // 2 - 110, top + plot + 32),
                cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "pairs per bin", (margin - 55, base + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (90, 90, 90), 1)
    ece = expected_calibration_error(p, y, bins)
    cv2.putText(img, f"{title}  ECE {ece:.3f}  n={len(np.asarray(p))}", (margin - 40, 25),
                cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    label = np.full((20, plot), 255, np.uint8)
    cv2.putText(label, "observed frequency", (plot // 2 - 80, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, 0, 1, cv2.LINE_AA)
    rot = cv2.rotate(label, cv2.ROTATE_90_COUNTERCLOCKWISE)
    img[top:top + plot, 2:22] = np.minimum(img[top:top + plot, 2:22], rot[:, :, None])
    if not cv2.imwrite(str(path), img):
        raise OSError(f"{path}: could not write the reliability diagram")
