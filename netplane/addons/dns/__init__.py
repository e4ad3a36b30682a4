"""The cluster DNS add-on: the image ``netplane/dns``, deployed as kubeadm deploys CoreDNS (a
Deployment ``coredns`` and the Service ``kube-dns`` in kube-system), answering the Kubernetes DNS
specification as CoreDNS's kubernetes plugin does.

- wire.py: DNS messages (RFC 1035, EDNS0 of RFC 6891), parsed and built;
- zone.py: the cluster's names, from Services, EndpointSlices and Namespaces, and the answer to one
  question (pure);
- corefile.py: the ConfigMap's Corefile, the part of it this server reads;
- serve.py: UDP and TCP on port 53, health, readiness and metrics, and the API watch behind them.
"""
