"""Add-ons: programs that run inside pods as in-cluster clients, as CoreDNS and ingress-nginx do on a
cluster. They import only the API client side, never the server, the lab or an agent."""
