import sys

from model_proxy.cli import main

sys.exit(main())
