"""Strict, typed suite specs: the axes' unions (:mod:`.axes`), workloads (:mod:`.workloads`), the
scenario blocks (:mod:`.inference`, :mod:`.training`, :mod:`.serving`), the suite itself with its
file loading and error lines (:mod:`.suite`), and the resolved cell the planner makes (:mod:`.cell`)."""
