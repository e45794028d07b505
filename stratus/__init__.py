"""Stratus: an OpenStack-compatible IaaS cloud."""

import sys

__version__ = "0.1.0"

# httpx's package imports its command-line client (click, rich and pygments) whenever those
# happen to be installed, and here they are (uvicorn needs click, the OpenStack clients bring
# rich): 6.5 MB of resident memory in every Stratus process that talks HTTP, which the object
# store's memory target counts for its proxy. Stratus never runs that client; a module marked
# absent makes httpx keep its stub `main` instead. Set before anything here imports httpx; if
# httpx is already loaded, this changes nothing.
sys.modules.setdefault("httpx._main", None)
