"""Myelin's Python client: stream numpy samples and markers into a Myelin server, attach
decoders, and read their predictions.

    import myelin, numpy as np
    client = myelin.Client("127.0.0.1:50051")
    stream = client.open_session("rig", ["TP9", "AF7", "AF8", "TP10"], rate=256)
    attachment = client.attach("rig", "erp-linear-muse", marker_codes=[1, 2])
    stream.push(np.zeros((256, 4))); stream.marker(1)
    for prediction in client.subscribe(attachment=attachment.attachment_id): print(prediction.label)
"""

# Other distributions may provide the wire stubs as `myelin.v1` (generated from proto/ with
# grpcio-tools); this package keeps its own in `myelin._wire`, and leaves room for theirs.
__path__ = __import__("pkgutil").extend_path(__path__, __name__)

from .client import Client, Subscription
from .errors import InvalidSamples, MyelinError
from .recording import read_recording
from .stream import SessionStream
from .types import (
    Acknowledgement,
    Attachment,
    AttachmentInfo,
    Calibration,
    LslSource,
    Marker,
    ModelInfo,
    Prediction,
    Progress,
    SessionInfo,
    Timing,
    Window,
)

__version__ = "0.1.0"

__all__ = [
    "Acknowledgement",
    "Attachment",
    "AttachmentInfo",
    "Calibration",
    "Client",
    "InvalidSamples",
    "LslSource",
    "Marker",
    "ModelInfo",
    "MyelinError",
    "Prediction",
    "Progress",
    "SessionInfo",
    "SessionStream",
    "Subscription",
    "Timing",
    "Window",
    "read_recording",
]
