"""`python -m pipecat_sip call ...`: the test caller (see `pipecat_sip.caller`)."""

import sys

from pipecat_sip.caller import main

if __name__ == "__main__":
    sys.exit(main())
