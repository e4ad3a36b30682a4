"""The scheduler's rules, as kube-scheduler's default plugins apply them: which nodes a pod may go
to (filters), which of them it had better go to (scores), and the taints that both honour."""
