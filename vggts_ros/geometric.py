"""Weight-free backend: classical features and geometry instead of VGGT-S.

Same contract as the learned backend (``vggts_ros.types.Segmentor``):

1. Source prompts: ``n_points`` K-means points of the source mask (``vggts_ros.prompts``).
2. Features: SIFT in and around the source mask, computed on the source crop and on a
   few affinely tilted copies of it (the ASIFT idea: simulate the viewpoint change so
   that a steep ego view and a grazing exo view still match), and SIFT on the target,
   upsampled so that small far-away objects still yield keypoints.
3. Matches: Lowe's ratio test, one match per target keypoint.
4. Geometry: RANSAC homography; the matches within a looser band around it form the
   *support* set, whose residuals give a smooth local correction (Gaussian-weighted,
   shrinking to zero away from the matches) on top of the homography, so that parts
   of a 3-D object off the dominant plane still land in place.
5. Transfer: the source mask is pulled into the target through the inverse mapping;
   the prompt points are pushed through the forward mapping.
6. Refinement: GrabCut on a crop around the transferred mask, with a trimap whose
   uncertain band grows with the out-of-plane rotation implied by the homography
   (the anisotropy of its local Jacobian): for a near-frontal change such as a stereo
   pair the transfer is kept almost as is, for an ego -> exo change the cut may
   reshape the silhouette. Matched object keypoints are sure foreground. The cut is
   kept only if it stays plausible (area and overlap with the transfer).

7. Fallback, when the object's own features do not localise it (a textureless box,
   a painted wall, a view from far around): the homography of the scene around the
   object (features in a ring around the mask) predicts its place and size in the
   target, and a Lab colour model of the object against that ring finds it there
   (GrabCut on the best-overlapping region, kept only if its area fits).

Each result says which path produced its mask (``path``: ``object_features`` or
``scene_homography+colour``) and, when the mask is empty, why (``reason``).

Visibility of a prompt point: its projection is inside the target image and support
matches exist near it in the source; confidence grows with that support and with the
number of RANSAC inliers. Too little evidence (few matches or inliers, a degenerate
homography) gives an empty mask with zero visibility and confidence, never an
exception. Projected points are clipped to the image, as in the learned pipeline
(visibility tells which fell outside); points without a model are reported at (-1, -1).
Features of recently seen images are cached (keyed by content), so several objects
on one synchronised set pay for the target features once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .config import GeometricConfig  # noqa: F401  (its settings: the node's model.geometric.*)
from .prompts import kmeans_sample_points  # the reference sampler, shared with VGGT-S
from .schema import check, from_dict
from .stream import StatelessSegmentor
from .types import SegmentationResult, TargetView


@dataclass
class _Features:
    points: np.ndarray  # Nx2 float32 in image pixels
    desc: np.ndarray  # NxD float32


def _gray(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim == 2:
        return img.astype(np.uint8)
    if img.shape[2] == 4:
        img = img[..., :3]
    return cv2.cvtColor(img.astype(np.uint8), cv2.COLOR_RGB2GRAY)


def _rgb(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim == 2:
        return cv2.cvtColor(img.astype(np.uint8), cv2.COLOR_GRAY2RGB)
    return np.ascontiguousarray(img[..., :3].astype(np.uint8))


def _bbox(mask: np.ndarray) -> Optional[Tuple[int, int, int, int]]:
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


class GeometricSegmentor(StatelessSegmentor):
    """Finds the source object in each target with SIFT, RANSAC and GrabCut (no weights)."""

    name = "geometric"

    def __init__(self, config: Optional[GeometricConfig] = None, **overrides) -> None:
        cfg = config or GeometricConfig()
        if overrides:  # a copy: the caller's config stays as it was
            cfg = from_dict(GeometricConfig, {**dataclasses.asdict(cfg), **overrides}, "model.geometric")
        self.config = cfg = check(cfg, "model.geometric", "geometric backend settings")
        self._sift_src = cv2.SIFT_create(nfeatures=cfg.source_features, contrastThreshold=cfg.contrast_threshold)
        self._sift_tgt = cv2.SIFT_create(nfeatures=cfg.target_features, contrastThreshold=cfg.contrast_threshold)
        # Features of recently seen images (several objects on one frame set reuse them).
        self._cache: "OrderedDict[bytes, Optional[_Features]]" = OrderedDict()
        self._cache_size = 16
        self._lock = threading.Lock()

    def _cached(self, key: bytes, compute):
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        value = compute()
        with self._lock:
            self._cache[key] = value
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return value

    # ------------------------------------------------------------------ API
    def segment(
        self, source_image: np.ndarray, source_mask: np.ndarray, targets: Sequence[TargetView]
    ) -> List[SegmentationResult]:
        src = _rgb(source_image)
        mask = np.asarray(source_mask)
        if mask.ndim == 3:
            mask = mask[..., 0]
        if mask.shape != src.shape[:2]:
            raise ValueError(f"source mask {mask.shape} does not match source image {src.shape[:2]}")
        mask = mask > 0
        cfg = self.config
        timings: Dict[str, float] = {}

        t0 = time.perf_counter()
        src_pts = np.asarray(kmeans_sample_points(mask.astype(np.uint8), cfg.n_points), np.float32).reshape(-1, 2)
        timings["prompts"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        src_feats = None
        if mask.any():
            gray = _gray(src)
            key = _digest(b"src", gray, np.packbits(mask))
            src_feats = self._cached(key, lambda: self._source_features(gray, mask))
        timings["features_source"] = time.perf_counter() - t0
        obj_size = math.sqrt(max(1, int(mask.sum())))

        results = []
        for view in targets:
            tt = time.perf_counter()
            res = self._segment_one(src_feats, mask, obj_size, src_pts, view, dict(timings))
            if cfg.fallback and not res.mask.any() and mask.any():
                t0 = time.perf_counter()
                res = self._fallback(src, mask, obj_size, src_pts, view, res)
                res.timings["fallback"] = time.perf_counter() - t0
            res.timings["total"] = time.perf_counter() - tt + (timings["prompts"] + timings["features_source"])
            results.append(res)
        return results

    # ------------------------------------------------------------------ features
    @staticmethod
    def _sift_on(sift, gray: np.ndarray, mask: Optional[np.ndarray]) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        kps, desc = sift.detectAndCompute(gray, mask)
        if desc is None or not kps:
            return np.zeros((0, 2), np.float32), None
        return np.float32([k.pt for k in kps]), desc

    def _source_features(self, gray: np.ndarray, mask: np.ndarray) -> Optional[_Features]:
        """SIFT on the mask's crop and on tilted copies, mapped back to source pixels."""
        cfg = self.config
        x0, y0, x1, y1 = _bbox(mask)
        m = cfg.crop_margin
        x0, y0 = max(0, x0 - m), max(0, y0 - m)
        x1, y1 = min(gray.shape[1], x1 + m), min(gray.shape[0], y1 + m)
        crop = gray[y0:y1, x0:x1]
        cmask = mask[y0:y1, x0:x1].astype(np.uint8) * 255
        h, w = crop.shape
        pts_all, desc_all = [], []
        for t in cfg.tilts:
            for phi in (cfg.tilt_angles if t > 1.0 else (0.0,)):
                A = cv2.getRotationMatrix2D((0.0, 0.0), phi, 1.0)
                corners = np.float32([[0, 0], [w, 0], [0, h], [w, h]]) @ A[:, :2].T + A[:, 2]
                A[:, 2] -= corners.min(0)
                size = np.ceil(corners.max(0) - corners.min(0)).astype(int) + 1
                g = cv2.warpAffine(crop, A, (int(size[0]), int(size[1])), flags=cv2.INTER_LINEAR)
                mk = cv2.warpAffine(cmask, A, (int(size[0]), int(size[1])), flags=cv2.INTER_NEAREST)
                if t > 1.0:  # anti-aliased compression of x by t
                    g = cv2.GaussianBlur(g, (0, 0), sigmaX=0.8 * math.sqrt(t * t - 1), sigmaY=0.01)
                    nw = max(1, int(round(size[0] / t)))
                    g = cv2.resize(g, (nw, int(size[1])), interpolation=cv2.INTER_LINEAR)
                    mk = cv2.resize(mk, (nw, int(size[1])), interpolation=cv2.INTER_NEAREST)
                pts, desc = self._sift_on(self._sift_src, g, mk)
                if desc is None:
                    continue
                pts = pts.copy()
                pts[:, 0] *= size[0] / g.shape[1]
                inv = cv2.invertAffineTransform(A)
                pts = pts @ inv[:, :2].T + inv[:, 2] + np.float32([x0, y0])
                pts_all.append(pts.astype(np.float32))
                desc_all.append(desc)
        if not desc_all:
            return None
        return _Features(np.concatenate(pts_all), np.concatenate(desc_all))

    def _target_features(self, gray: np.ndarray) -> Optional[_Features]:
        cfg = self.config
        up = cfg.target_upscale
        npx = gray.shape[0] * gray.shape[1]
        up = max(1.0, min(up, math.sqrt(cfg.max_target_pixels / max(1, npx))))
        g = cv2.resize(gray, None, fx=up, fy=up, interpolation=cv2.INTER_CUBIC) if up > 1.0 else gray
        pts, desc = self._sift_on(self._sift_tgt, g, None)
        if desc is None:
            return None
        return _Features(((pts + 0.5) / up - 0.5).astype(np.float32), desc)

    def _match(self, a: _Features, b: _Features) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        if len(b.desc) < 2 or len(a.desc) < 1:
            return np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32), np.zeros(0)
        if len(a.desc) * len(b.desc) <= 4_000_000:
            matcher = cv2.BFMatcher(cv2.NORM_L2)
        else:  # approximate kd-tree search; seeded so that runs repeat exactly
            cv2.setRNGSeed(0)
            matcher = cv2.FlannBasedMatcher(dict(algorithm=1, trees=4), dict(checks=64))
        best: Dict[int, Tuple[float, int]] = {}
        for pair in matcher.knnMatch(a.desc, b.desc, k=2):
            if len(pair) < 2:
                continue
            m, n = pair
            if m.distance < self.config.ratio * n.distance:
                if m.trainIdx not in best or m.distance < best[m.trainIdx][0]:
                    best[m.trainIdx] = (m.distance, m.queryIdx)
        if not best:
            return np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32), np.zeros(0)
        ti = np.fromiter(best.keys(), int)
        qi = np.array([best[t][1] for t in ti])
        dist = np.array([best[t][0] for t in ti])
        return a.points[qi], b.points[ti], dist

    # ------------------------------------------------------------------ one target
    def _empty(self, shape, src_pts, timings, reason: str) -> SegmentationResult:
        n = len(src_pts)
        return SegmentationResult(
            mask=np.zeros(shape, bool),
            source_points=src_pts.astype(np.float32),
            target_points=np.full((n, 2), -1.0, np.float32),
            visibility=np.zeros(n, np.float32),
            confidence=np.zeros(n, np.float32),
            score=0.0,
            timings=timings,
            reason=reason,
        )

    def _segment_one(self, src_feats, src_mask, obj_size, src_pts, view: TargetView, timings) -> SegmentationResult:
        cfg = self.config
        tgt = _rgb(view.image)
        th, tw = tgt.shape[:2]
        diag = math.hypot(th, tw)
        if src_feats is None:
            return self._empty((th, tw), src_pts, timings, "no features on the source object (textureless?)")

        t0 = time.perf_counter()
        gray = _gray(tgt)
        tgt_feats = self._cached(_digest(b"tgt", gray), lambda: self._target_features(gray))
        timings["features_target"] = time.perf_counter() - t0
        if tgt_feats is None:
            return self._empty((th, tw), src_pts, timings, "no features in the target image")

        t0 = time.perf_counter()
        p, q, _ = self._match(src_feats, tgt_feats)
        timings["matching"] = time.perf_counter() - t0
        if len(p) < max(cfg.min_matches, 4):
            return self._empty((th, tw), src_pts, timings,
                               f"{len(p)} feature matches on the object (need {max(cfg.min_matches, 4)})")

        t0 = time.perf_counter()
        thr = cfg.ransac_thresh * diag
        H, inl = cv2.findHomography(p, q, cv2.USAC_MAGSAC, thr, maxIters=5000, confidence=0.999)
        if H is None or inl is None:
            timings["geometry"] = time.perf_counter() - t0
            return self._empty((th, tw), src_pts, timings, f"no homography fits the {len(p)} object matches")
        inl = inl.ravel().astype(bool)
        n_inl = int(inl.sum())
        Hinv = np.linalg.inv(H) if abs(np.linalg.det(H)) > 1e-12 else None
        if n_inl < cfg.min_inliers or Hinv is None or not self._plausible(H, src_mask, (th, tw)):
            timings["geometry"] = time.perf_counter() - t0
            why = (f"{n_inl} of {len(p)} object matches agree on a homography (need {cfg.min_inliers})"
                   if n_inl < cfg.min_inliers else "the object's homography folds, vanishes or explodes it")
            return self._empty((th, tw), src_pts, timings, why)
        resid = q - cv2.perspectiveTransform(p[None], H)[0]
        support = np.linalg.norm(resid, axis=1) <= cfg.support_factor * thr
        ps, qs = p[support], q[support]
        timings["geometry"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        sigma_src = cfg.local_sigma * obj_size
        transferred = self._transfer_mask(src_mask, H, Hinv, ps, qs, (th, tw), sigma_src)
        tgt_pts = self._forward(src_pts, H, ps, qs, sigma_src)
        timings["transfer"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        mask = transferred
        if cfg.grabcut and transferred.any():
            ys, xs = np.nonzero(src_mask)
            s1, s2 = np.linalg.svd(_jacobian(H, xs.mean(), ys.mean()), compute_uv=False)
            tilt = math.log(max(s1, 1e-9) / max(s2, 1e-9))
            frac = min(cfg.band_max, cfg.band_gain * max(0.0, tilt - cfg.band_deadzone))
            if frac > 0:  # near-frontal changes (e.g. a stereo pair) keep the transfer
                band = max(cfg.band_min_px, int(round(frac * math.sqrt(transferred.sum()))))
                mask = self._refine(tgt, transferred, q[inl], band)
        timings["refine"] = time.perf_counter() - t0

        # Visibility and confidence of the prompt points.
        inside = (tgt_pts[:, 0] >= 0) & (tgt_pts[:, 0] <= tw - 1) & (tgt_pts[:, 1] >= 0) & (tgt_pts[:, 1] <= th - 1)
        d = np.linalg.norm(src_pts[:, None, :] - ps[None, :, :], axis=2) if len(ps) else np.zeros((len(src_pts), 0))
        near = np.exp(-0.5 * (d / max(sigma_src, 1.0)) ** 2).sum(axis=1)
        model_conf = n_inl / (n_inl + 10.0)
        visibility = (inside & (near >= 0.5)).astype(np.float32)
        confidence = (inside * model_conf * near / (near + 1.0)).astype(np.float32)
        tgt_pts = np.stack([np.clip(tgt_pts[:, 0], 0, tw - 1), np.clip(tgt_pts[:, 1], 0, th - 1)], 1)
        return SegmentationResult(
            mask=mask,
            source_points=src_pts.astype(np.float32),
            target_points=tgt_pts.astype(np.float32),
            visibility=visibility,
            confidence=np.clip(confidence, 0.0, 1.0),
            score=float(model_conf) if mask.any() else 0.0,
            timings=timings,
            path="object_features" if mask.any() else "",
            reason="" if mask.any() else "the transferred mask falls outside the target image",
        )

    # ------------------------------------------------------------------ fallback
    def _fallback(self, src: np.ndarray, src_mask: np.ndarray, obj_size: float, src_pts: np.ndarray,
                  view: TargetView, failed: SegmentationResult) -> SegmentationResult:
        """Scene homography + colour model, for objects whose own features fail.

        1. Features in a ring around the object (the floor or wall it stands on) are
           matched to the target; their homography predicts the object's region and
           size there (off-plane parts land nearby, not exactly). Without it the
           result stays empty: colour alone over the whole image would be a guess.
        2. A Lab colour histogram of the object against the ring gives, in a window
           around the prediction, the pixels that look like the object; the connected
           component that best overlaps the prediction is cut out with GrabCut.
        3. Kept only if its area fits the prediction; otherwise the result stays empty
           with both reasons.
        """
        cfg = self.config
        tgt = _rgb(view.image)
        th, tw = tgt.shape[:2]

        def give_up(why: str) -> SegmentationResult:
            failed.reason = f"{failed.reason}; fallback: {why}"
            return failed

        if src_mask.sum() < cfg.fallback_min_area:
            return give_up(f"the source mask ({int(src_mask.sum())} px) is too small for a colour model")

        # 1. the surroundings' homography
        k = max(3, int(round(cfg.context_radius * obj_size)))
        ring = cv2.dilate(src_mask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1,) * 2))
        near = cv2.dilate(src_mask.astype(np.uint8), np.ones((7, 7), np.uint8))
        ring = (ring > 0) & (near == 0)
        gray_s, gray_t = _gray(src), _gray(tgt)
        H, n_inl, ctx_why = None, 0, ""
        if ring.any():
            ctx = self._cached(_digest(b"ctx", gray_s, np.packbits(src_mask)), lambda: self._source_features(gray_s, ring))
            tgt_feats = self._cached(_digest(b"tgt", gray_t), lambda: self._target_features(gray_t))
            if ctx is not None and tgt_feats is not None:
                p, q, _ = self._match(ctx, tgt_feats)
                if len(p) >= max(cfg.min_matches, 4):
                    thr = cfg.ransac_thresh * math.hypot(th, tw)
                    H, inl = cv2.findHomography(p, q, cv2.USAC_MAGSAC, thr, maxIters=5000, confidence=0.999)
                    n_inl = int(inl.sum()) if inl is not None else 0
                    if H is None or n_inl < cfg.min_inliers or not self._plausible(H, src_mask, (th, tw)):
                        ctx_why = f"the surroundings' {len(p)} matches give no plausible homography ({n_inl} inliers)"
                        H = None
                else:
                    ctx_why = f"{len(p)} matches in the object's surroundings"
        if H is None:
            # Colour alone, over the whole image, is a guess: without a predicted place
            # and size nothing checks it, so the result stays empty.
            return give_up(ctx_why or "no features in the object's surroundings")
        predicted = cv2.warpPerspective(src_mask.astype(np.uint8), H, (tw, th), flags=cv2.INTER_NEAREST) > 0
        if not predicted.any():
            return give_up("the surroundings' homography puts the object outside the target image")

        # 2. colour model: object vs its surroundings in the source
        lab_s = cv2.cvtColor(src, cv2.COLOR_RGB2LAB)
        lab_t = cv2.cvtColor(tgt, cv2.COLOR_RGB2LAB)
        core = cv2.erode(src_mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        obj_h = _lab_hist(lab_s[core if core.any() else src_mask], cfg.colour_bins)
        bg_h = _lab_hist(lab_s[ring] if ring.any() else lab_s[~src_mask], cfg.colour_bins)
        distance = float(cv2.compareHist(obj_h, bg_h, cv2.HISTCMP_BHATTACHARYYA))
        if distance < cfg.min_colour_distance:
            return give_up(f"its colours are not distinct from its surroundings (distance {distance:.2f} < "
                           f"{cfg.min_colour_distance})")
        x0, y0, x1, y1 = _bbox(predicted)
        m = int(round(cfg.search_margin * math.sqrt(predicted.sum()))) + 4
        x0, y0, x1, y1 = max(0, x0 - m), max(0, y0 - m), min(tw, x1 + m), min(th, y1 + m)
        win = lab_t[y0:y1, x0:x1]
        win_h = _lab_hist(win.reshape(-1, 3), cfg.colour_bins)
        idx = _lab_index(win, cfg.colour_bins)
        p_obj = obj_h.reshape(-1)[idx]
        p_bg = 0.5 * bg_h.reshape(-1)[idx] + 0.5 * win_h.reshape(-1)[idx]
        ratio = p_obj / (p_obj + p_bg + 1e-12)
        cand = (ratio > 0.5).astype(np.uint8)
        ks = max(3, int(round(0.05 * obj_size)) | 1)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (ks, ks))
        cand = cv2.morphologyEx(cv2.morphologyEx(cand, cv2.MORPH_OPEN, kernel), cv2.MORPH_CLOSE, kernel)
        count, lab = cv2.connectedComponents(cand, connectivity=8)
        if count <= 1:
            return give_up("no region near the predicted place has the object's colours")
        pred_win = predicted[y0:y1, x0:x1]
        best, best_score = 0, 0.0
        for i in range(1, count):
            comp = lab == i
            score = float((comp & pred_win).sum()) / float(comp.sum() + pred_win.sum())  # Dice-like
            if score > best_score:
                best, best_score = i, score
        if best == 0:
            return give_up("no region with the object's colours overlaps the predicted region")
        region = np.zeros((th, tw), bool)
        region[y0:y1, x0:x1] = lab == best

        # 3. cut it out and check it against the prediction
        band = max(cfg.band_min_px, int(round(0.15 * math.sqrt(region.sum()))))
        mask = self._refine(tgt, region, np.zeros((0, 2), np.float32), band)
        area = int(mask.sum())
        lo, hi = cfg.fallback_area
        expected = int(predicted.sum())
        if not lo * expected <= area <= hi * expected:
            return give_up(f"the region with the object's colours has {area} px where {expected} are expected")
        path = "scene_homography+colour"

        # prompt points: the source box mapped onto the found box, visible where they land on it
        sx0, sy0, sx1, sy1 = _bbox(src_mask)
        tx0, ty0, tx1, ty1 = _bbox(mask)
        sx = (tx1 - tx0) / max(1.0, sx1 - sx0)
        sy = (ty1 - ty0) / max(1.0, sy1 - sy0)
        tgt_pts = np.stack([tx0 + (src_pts[:, 0] - sx0) * sx, ty0 + (src_pts[:, 1] - sy0) * sy], 1)
        tgt_pts = np.stack([np.clip(tgt_pts[:, 0], 0, tw - 1), np.clip(tgt_pts[:, 1], 0, th - 1)], 1)
        on = mask[tgt_pts[:, 1].round().astype(int), tgt_pts[:, 0].round().astype(int)]
        evidence = float(ratio[mask[y0:y1, x0:x1]].mean()) if mask[y0:y1, x0:x1].any() else 0.0
        conf = 0.5 * evidence  # weaker than matched features: ranks below them where masks overlap
        return SegmentationResult(
            mask=mask,
            source_points=src_pts.astype(np.float32),
            target_points=tgt_pts.astype(np.float32),
            visibility=on.astype(np.float32),
            confidence=(on * conf).astype(np.float32),
            score=conf,
            timings=failed.timings,
            path=path,
            reason="",
        )

    # ------------------------------------------------------------------ geometry helpers
    @staticmethod
    def _plausible(H: np.ndarray, src_mask: np.ndarray, tgt_shape) -> bool:
        """Reject homographies that fold, explode or vanish the object's box."""
        x0, y0, x1, y1 = _bbox(src_mask)
        box = np.float32([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
        w = H[2, 0] * box[:, 0] + H[2, 1] * box[:, 1] + H[2, 2]
        if np.any(w <= 1e-9):
            return False  # the box crosses the line at infinity
        quad = cv2.perspectiveTransform(box[None], H)[0]
        if not cv2.isContourConvex(quad.astype(np.float32)):
            return False
        area_src = float((x1 - x0) * (y1 - y0))
        area_tgt = abs(float(cv2.contourArea(quad)))
        ratio = area_tgt / max(area_src, 1.0)
        return 1.0 / 50 < ratio < 50 and area_tgt < 4.0 * tgt_shape[0] * tgt_shape[1]

    def _correction(self, at: np.ndarray, anchors: np.ndarray, offsets: np.ndarray, sigma: float) -> np.ndarray:
        """Gaussian-weighted mean of ``offsets`` at ``anchors``, shrunk to 0 where sparse."""
        if len(anchors) == 0:
            return np.zeros_like(at)
        if len(anchors) > 400:  # evenly thinned: the field is smooth at this scale anyway
            keep = np.linspace(0, len(anchors) - 1, 400).round().astype(int)
            anchors, offsets = anchors[keep], offsets[keep]
        out = np.zeros_like(at, dtype=np.float64)
        for s in range(0, len(at), 4096):
            a = at[s : s + 4096]
            d2 = ((a[:, None, :] - anchors[None, :, :]) ** 2).sum(-1)
            w = np.exp(-0.5 * d2 / (sigma * sigma))
            out[s : s + 4096] = (w @ offsets) / (w.sum(1, keepdims=True) + self.config.local_prior)
        return out

    def _forward(self, pts: np.ndarray, H, ps, qs, sigma_src) -> np.ndarray:
        if len(pts) == 0:
            return np.zeros((0, 2), np.float32)
        base = cv2.perspectiveTransform(pts[None].astype(np.float32), H)[0].astype(np.float64)
        if len(ps) == 0:
            return base.astype(np.float32)
        off = qs - cv2.perspectiveTransform(ps[None], H)[0]
        return (base + self._correction(pts.astype(np.float64), ps.astype(np.float64), off, sigma_src)).astype(np.float32)

    def _transfer_mask(self, src_mask, H, Hinv, ps, qs, tgt_shape, sigma_src) -> np.ndarray:
        """Backward warp of the source mask: target pixel -> H^-1 -> local correction."""
        th, tw = tgt_shape
        x0, y0, x1, y1 = _bbox(src_mask)
        box = np.float32([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
        quad = cv2.perspectiveTransform(box[None], H)[0]
        pad = 0.25 * math.sqrt(max(1.0, abs(cv2.contourArea(quad)))) + 8
        bx0 = int(max(0, math.floor(quad[:, 0].min() - pad)))
        by0 = int(max(0, math.floor(quad[:, 1].min() - pad)))
        bx1 = int(min(tw, math.ceil(quad[:, 0].max() + pad)))
        by1 = int(min(th, math.ceil(quad[:, 1].max() + pad)))
        out = np.zeros((th, tw), bool)
        if bx1 <= bx0 or by1 <= by0:
            return out
        step = max(4, int(round(math.sqrt((bx1 - bx0) * (by1 - by0)) / 64)))
        gx = np.arange(bx0, bx1 + step, step, dtype=np.float64)
        gy = np.arange(by0, by1 + step, step, dtype=np.float64)
        grid = np.stack(np.meshgrid(gx, gy), -1).reshape(-1, 2)
        base = cv2.perspectiveTransform(grid[None], Hinv)[0]
        if len(qs):
            # offsets in source pixels, anchored at the target keypoints
            off = ps - cv2.perspectiveTransform(qs[None], Hinv)[0]
            scale = math.sqrt(abs(cv2.contourArea(quad)) / max(1.0, float((x1 - x0) * (y1 - y0))))
            sigma_t = max(2.0, sigma_src * scale)
            base = base + self._correction(grid, qs.astype(np.float64), off.astype(np.float64), sigma_t)
        mx = base[:, 0].reshape(len(gy), len(gx)).astype(np.float32)
        my = base[:, 1].reshape(len(gy), len(gx)).astype(np.float32)
        w, h = bx1 - bx0, by1 - by0
        # grid node k sits at pixel bx0 + k*step: resize with aligned corners
        xs = np.arange(w, dtype=np.float32) / step
        ys = np.arange(h, dtype=np.float32) / step
        fx, fy = np.meshgrid(xs, ys)
        mapx = cv2.remap(mx, fx, fy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        mapy = cv2.remap(my, fx, fy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        warped = cv2.remap(src_mask.astype(np.uint8), mapx, mapy, cv2.INTER_NEAREST,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        out[by0:by1, bx0:bx1] = warped > 0
        return out

    def _refine(self, img: np.ndarray, transferred: np.ndarray, seeds: np.ndarray, band: int) -> np.ndarray:
        """GrabCut in a band of ``band`` px around the transferred boundary.

        Trimap: the transfer eroded by the band and disks at the inlier keypoints are
        foreground, the rest of the transfer probable foreground, the dilated ring
        probable background, everything further away background. Falls back to the
        transfer when the cut loses or adds too much.
        """
        cfg = self.config
        th, tw = transferred.shape
        area = int(transferred.sum())
        x0, y0, x1, y1 = _bbox(transferred)
        m = band + 10
        cx0, cy0, cx1, cy1 = max(0, x0 - m), max(0, y0 - m), min(tw, x1 + m), min(th, y1 + m)
        crop = np.ascontiguousarray(img[cy0:cy1, cx0:cx1])
        tm = transferred[cy0:cy1, cx0:cx1].astype(np.uint8)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band + 1, 2 * band + 1))
        gc = np.full(tm.shape, cv2.GC_BGD, np.uint8)
        gc[cv2.dilate(tm, kernel) > 0] = cv2.GC_PR_BGD
        gc[tm > 0] = cv2.GC_PR_FGD
        gc[cv2.erode(tm, kernel) > 0] = cv2.GC_FGD
        for x, y in seeds:
            xi, yi = int(round(x)) - cx0, int(round(y)) - cy0
            if 0 <= xi < tm.shape[1] and 0 <= yi < tm.shape[0] and gc[yi, xi] != cv2.GC_BGD:
                cv2.circle(gc, (xi, yi), 2, int(cv2.GC_FGD), -1)
        if not (gc == cv2.GC_BGD).any() and not (gc == cv2.GC_PR_BGD).any():
            return transferred
        bgd = np.zeros((1, 65), np.float64)
        fgd = np.zeros((1, 65), np.float64)
        try:
            cv2.setRNGSeed(0)
            cv2.grabCut(crop, gc, None, bgd, fgd, cfg.grabcut_iters, cv2.GC_INIT_WITH_MASK)
        except cv2.error:
            return transferred
        fg = (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)
        # drop blobs that are mostly outside the transfer (background leaking in)
        n, lab = cv2.connectedComponents(fg.astype(np.uint8), connectivity=8)
        keep = np.zeros_like(fg)
        for i in range(1, n):
            comp = lab == i
            if (comp & (tm > 0)).sum() >= 0.5 * comp.sum():
                keep |= comp
        out = np.zeros_like(transferred)
        out[cy0:cy1, cx0:cx1] = keep
        a = int(out.sum())
        if a < 0.4 * area or a > 2.5 * area or (out & transferred).sum() < 0.4 * area:
            return transferred
        return out


def _lab_index(lab: np.ndarray, bins: Tuple[int, int, int]) -> np.ndarray:
    """Histogram bin of each Lab pixel (OpenCV's 8-bit Lab: every channel in 0..255)."""
    lab = np.asarray(lab, np.int32)
    l = lab[..., 0] * bins[0] // 256
    a = lab[..., 1] * bins[1] // 256
    b = lab[..., 2] * bins[2] // 256
    return (l * bins[1] + a) * bins[2] + b


def _lab_hist(pixels: np.ndarray, bins: Tuple[int, int, int]) -> np.ndarray:
    """Normalised, lightly smoothed Lab histogram (float32, shape ``bins``)."""
    idx = _lab_index(np.asarray(pixels).reshape(-1, 3), bins)
    hist = np.bincount(idx, minlength=bins[0] * bins[1] * bins[2]).astype(np.float32).reshape(bins)
    hist = hist + 0.25 * (np.roll(hist, 1, 1) + np.roll(hist, -1, 1) + np.roll(hist, 1, 2) + np.roll(hist, -1, 2))
    hist += 1e-3 * max(1.0, hist.sum()) / hist.size
    return (hist / hist.sum()).astype(np.float32)


def _digest(tag: bytes, *arrays: np.ndarray) -> bytes:
    h = hashlib.blake2b(tag, digest_size=20)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str(a.shape).encode())
        h.update(a.data)
    return h.digest()


def _jacobian(H: np.ndarray, x: float, y: float) -> np.ndarray:
    """2x2 derivative of the homography's pixel mapping at (x, y)."""
    w = H[2, 0] * x + H[2, 1] * y + H[2, 2]
    u = (H[0, 0] * x + H[0, 1] * y + H[0, 2]) / w
    v = (H[1, 0] * x + H[1, 1] * y + H[1, 2]) / w
    return np.array([[H[0, 0] - u * H[2, 0], H[0, 1] - u * H[2, 1]],
                     [H[1, 0] - v * H[2, 0], H[1, 1] - v * H[2, 1]]]) / w
