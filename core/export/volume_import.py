"""Import a NIfTI label volume into one "volume" item of a project.

The labels must lie on the item's voxel grid: same (Z, Y, X) shape and the same affine (to
1e-3 mm) as the item's volume, checked by :func:`core.io.nifti.load_label_nifti`. They replace
the item's mask as ONE journaled edit (the diff against the current mask), written in the same
transaction as the state change, so the import is crash-safe and reads back like any edit.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from core.annotation.edits import diff_region
from core.errors import ImportFormatError
from core.project.items import Item
from core.project.store import Project


def import_label_volume(project: Project, item: Item, path: str | os.PathLike) -> int:
    """Replace ``item``'s mask by the labels of the NIfTI file ``path``.

    Returns:
        The number of labelled (non-zero) voxels imported.

    Raises:
        ImportFormatError: The item is not a volume, or the file does not fit it (shape,
            affine, values); nothing is changed then.
        SegStudioError: The item's own volume cannot be read.
    """
    from core.io.nifti import load_label_nifti
    from core.io.volumes import load_item_volume

    path = Path(path)
    if item.kind != "volume":
        raise ImportFormatError(f"The item {item.name} is not a volume ({item.kind}); "
                                "NIfTI labels import into volume items only.")
    reference = load_item_volume(item)
    labels = load_label_nifti(path, reference)
    if labels.shape != tuple(item.mask_shape):
        raise ImportFormatError(
            f"'{path.name}' is {labels.shape} (Z, Y, X) but the mask of {item.name} is "
            f"{tuple(item.mask_shape)}."
        )
    current = project.load_mask(item)
    if labels.dtype.itemsize > current.dtype.itemsize:
        current = current.astype(labels.dtype)
    before = current.copy()
    current[...] = labels
    edit = diff_region(before, current, tuple(slice(0, n) for n in current.shape))
    with project.transaction():
        if edit is not None:
            project.append_edit(item.id, edit)
        if project.item(item.id).state == "new":
            project.set_state(item.id, "in_progress")
    return int(np.count_nonzero(labels))
