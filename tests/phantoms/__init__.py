"""An independent phantom generator for the capture pipeline (issue 22).

Analytic wounds on flat skin, limbs and heels, in random poses, captured like a fused
hand-held LiDAR scan, with exact ground truth. Written separately from
`lidar_capture`'s synthetic generator (whose source it does not use): other outlines,
profiles and colours, so figures on it say how the pipeline does on scans it was not
built around. Never used for training or calibration.

    from tests.phantoms import phantom_spec, render

    scan, truth = render(phantom_spec(7))
"""

from tests.phantoms._render import Rendered, render, render_frames
from tests.phantoms._spec import PROFILES, SHAPES, SITES, SKIN_GROUPS, Phantom, phantom_spec
from tests.phantoms._truth import Truth, truth

__all__ = [
    "PROFILES",
    "SHAPES",
    "SITES",
    "SKIN_GROUPS",
    "Phantom",
    "Rendered",
    "Truth",
    "phantom_spec",
    "render",
    "render_frames",
    "truth",
]
