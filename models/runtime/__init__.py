"""The TF-free edge runtime: what `pip install iam-writers` ships, with no extras.

It imports NumPy, OpenCV, SQLite and ai-edge-litert only (TensorFlow just for a SavedModel
folder), so it runs on edge devices. One module per idea:

- `model`: loading an export (.tflite or SavedModel) and running it on an image;
- `pages`: a page scan's text lines, the page laid level first;
- `photos`: a page photographed: its sheet found, straightened onto its paper, measured;
- `descriptors`: the contour-hinge descriptor (training-free) and RootSIFT + VLAD;
- `gallery`: enrolled writers in one SQLite file;
- `identify`: enrolment, identification and verification by embedding, hinge, VLAD or
  all of them fused;
- `evidence`: likelihood ratios in words, and the HTML reports that show them.
"""

from models.runtime.gallery import Enrolled, Gallery, GalleryError, Snapshot, gallery_file
from models.runtime.identify import (
    EnrolledWriter,
    Features,
    Identifier,
    Prepared,
    Read,
    enroll,
    features_for,
    fuse,
    hinge_similarity,
    verify,
)
from models.runtime.model import (
    BUCKET_PX,
    CARD,
    SIGNATURE,
    BlurredError,
    LowResolutionError,
    Model,
    ModelError,
    NoInkError,
    embed_inked,
    handwriting,
    unit,
)

__all__ = ["BUCKET_PX", "BlurredError", "CARD", "SIGNATURE", "Enrolled", "EnrolledWriter",
           "Features", "Gallery",
           "GalleryError", "Identifier", "LowResolutionError", "Model", "Prepared", "ModelError",
           "NoInkError", "Read", "Snapshot", "embed_inked", "enroll", "features_for", "fuse",
           "gallery_file", "handwriting", "hinge_similarity", "unit", "verify"]
