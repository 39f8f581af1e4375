"""``toolkit tune``: the serving configuration that meets a latency SLO at the highest throughput.

:mod:`toolkit.tune.space` describes the knobs and their values, :mod:`toolkit.tune.search` walks
them (coordinate descent from the spec's values, or every configuration of a small space) and
:mod:`toolkit.tune.store` keeps every measured point so that an interrupted search resumes.
"""
