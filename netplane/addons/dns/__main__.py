"""``python -m netplane.addons.dns -conf /etc/coredns/Corefile``: the netplane/dns image's program."""
import sys

from netplane.addons.dns.serve import main

sys.exit(main(sys.argv[1:]))
