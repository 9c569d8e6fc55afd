"""Fault campaigns (issue #8): a real cluster, concurrent etcd clients through
the router, a nemesis, and checkers over the recorded history.
`python -m flotilla.campaign --help`."""
