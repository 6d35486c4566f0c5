#!/usr/bin/env python3
"""Logit error of a model variant against a reference, from two `engram logits` outputs.

usage: logit_error.py REFERENCE.npy VARIANT.npy [REFERENCE2.npy VARIANT2.npy ...]

Each file is float32 [T, V] (the logits of T teacher-forced positions). Prints, over all
positions of all pairs: the relative RMS error ||variant - reference|| / ||reference||, the
top-1 agreement (the share of positions whose argmax is the same) and the positions counted,
and the same agreement restricted to the "decided" positions: those whose reference gap between
the first and second logit exceeds twice the largest logit change the variant makes there (a
flip elsewhere is a near-tie, which random-weight models are full of), as one JSON object.
Needs numpy (Debian's python3-numpy).
"""
import json
import sys

import numpy as np


def main(argv):
    if len(argv) < 3 or len(argv) % 2 != 1:
        print(__doc__, file=sys.stderr)
        return 2
    num = den = 0.0
    agree = total = 0
    decided = decided_agree = 0
    for ref_path, var_path in zip(argv[1::2], argv[2::2]):
        ref = np.load(ref_path).astype(np.float64)
        var = np.load(var_path).astype(np.float64)
        if ref.shape != var.shape:
            print(f"{ref_path} is {ref.shape} but {var_path} is {var.shape}", file=sys.stderr)
            return 1
        ref = ref.reshape(-1, ref.shape[-1])
        var = var.reshape(-1, var.shape[-1])
        num += float(((var - ref) ** 2).sum())
        den += float((ref ** 2).sum())
        same = ref.argmax(axis=1) == var.argmax(axis=1)
        agree += int(same.sum())
        total += ref.shape[0]
        top2 = np.sort(ref, axis=1)[:, -2:]
        gap = top2[:, 1] - top2[:, 0]
        change = np.abs(var - ref).max(axis=1)
        mask = gap > 2 * change
        decided += int(mask.sum())
        decided_agree += int(same[mask].sum())
    print(json.dumps({"relative_rms": (num / den) ** 0.5, "top1_agreement": agree / total,
                      "positions": total, "decided_positions": decided,
                      "top1_agreement_decided": decided_agree / decided if decided else None}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
