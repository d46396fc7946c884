"""Scores of predicted nuclei against the truth: pixel metrics, object metrics (AJI, PQ, mAP) and the PanNuke
benchmark's bPQ/mPQ."""
