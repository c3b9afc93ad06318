"""The worker subprocess of `rtmh bench ingest` (``python -m rtmh.bench.ingest SPEC_JSON``)."""

import json
import sys

from rtmh.bench.ingest.child import main

main(json.loads(sys.argv[1]))
