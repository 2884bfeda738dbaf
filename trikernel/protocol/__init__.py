"""The Jupyter messaging protocol as values: no sockets, no loops, no IPython.

Everything that touches bytes on the wire lives here and is tested without I/O;
``tests/unit/test_protocol_purity.py`` fails if a module here imports trio, zmq or IPython.
"""

from __future__ import annotations

from .connection import CHANNELS as CHANNELS
from .connection import Channel as Channel
from .connection import ConnectionInfo as ConnectionInfo
from .wire import DELIMITER as DELIMITER
from .wire import PROTOCOL_VERSION as PROTOCOL_VERSION
from .wire import FramingError as FramingError
from .wire import Header as Header
from .wire import Message as Message
from .wire import MessageFormatError as MessageFormatError
from .wire import ReplayError as ReplayError
from .wire import Session as Session
from .wire import SignatureError as SignatureError
from .wire import WireError as WireError
from .wire import timestamp as timestamp
