"""Temporal segments: editing a track (create, resize, relabel, split, merge, delete) with undo,
no overlaps, and proposals from per-frame scores."""

from __future__ import annotations

import numpy as np
import pytest

from core.annotation.segments import Segment, SegmentError, SegmentTrack, propose_segments
from core.project.store import Project


def test_editing_a_track_keeps_segments_apart_and_undoes():
    track = SegmentTrack(100)
    track.add(10, 29, "run")
    track.add(50, 40, "jump")  # ends in any order
    assert [(s.start, s.end, s.label) for s in track.segments] == [(10, 29, "run"),
                                                                   (40, 50, "jump")]
    track.add(25, 45, "fall")  # over both: they are trimmed
    assert [(s.start, s.end) for s in track.segments] == [(10, 24), (25, 45), (46, 50)]
    track.split(0, 20)
    assert [(s.start, s.end) for s in track.segments][:2] == [(10, 19), (20, 24)]
    track.merge(0, 1)
    track.relabel(0, "walk")
    track.resize(0, start=5)
    assert track.segments[0] == Segment(5, 24, "walk")
    assert track.labels_per_frame()[5] == "walk" and track.labels_per_frame()[4] == ""
    track.delete([2])
    assert len(track) == 2
    for _ in range(6):
        assert track.undo()
    assert [(s.start, s.end) for s in track.segments] == [(10, 29), (40, 50)]
    assert track.redo() and len(track) == 3


def test_bad_segments_are_refused():
    track = SegmentTrack(30)
    with pytest.raises(SegmentError, match="not all in the video"):
        track.add(20, 30, "run")
    with pytest.raises(SegmentError, match="label"):
        track.add(1, 2, " ")
    track.add(0, 9, "run")
    with pytest.raises(SegmentError, match="does not cut"):
        track.split(0, 0)
    with pytest.raises(SegmentError, match="no segment 3"):
        track.delete([3])
    assert len(track) == 1 and not track.redo()


def test_proposals_follow_a_known_score_curve():
    labels = ["background", "wave", "clap"]
    scores = np.zeros((120, 3))
    scores[:, 0] = 0.9
    scores[20:60] = [0.1, 0.85, 0.05]  # 40 frames of waving
    scores[80:84] = [0.1, 0.05, 0.85]  # a 4-frame blip: too short
    scores[90:115] = [0.2, 0.1, 0.7]
    proposals = propose_segments(scores, labels, threshold=0.5, min_frames=8, smooth=5,
                                 background=["background"])
    assert [p.label for p in proposals] == ["wave", "clap"]
    # a 5-frame average moves an edge by at most 2 frames
    wave, clap = proposals
    assert (wave.start, wave.end) == (20, 59)  # 0.85 against 0.9: the crossing is mid-ramp
    assert abs(clap.start - 90) <= 2 and abs(clap.end - 114) <= 2
    assert all(p.source == "model" and 0.6 < p.score <= 0.85 for p in proposals)


def test_segments_and_scores_are_kept_by_the_project(tmp_path, sample_dir):
    with Project.create(tmp_path / "p") as project:
        (item_id,) = project.add_items([sample_dir / "camera.png"]).added_ids
        project.set_action_labels(["run", "jump"])
        project.save_segments(item_id, [Segment(0, 9, "run"), Segment(12, 20, "jump", "model", 0.8)])
        scores = np.random.default_rng(0).random((30, 2)).astype(np.float32)
        project.save_action_scores(item_id, "c3d", ["run", "jump"], scores)
    with Project.open(tmp_path / "p") as project:
        item_id = project.items()[0].id
        assert project.action_labels() == ["run", "jump"]
        assert project.load_segments(item_id)[1] == Segment(12, 20, "jump", "model",
                                                      pytest.approx(0.8))
        model, names, kept = project.load_action_scores(item_id)
        assert (model, names) == ("c3d", ["run", "jump"]) and np.array_equal(kept, scores)
