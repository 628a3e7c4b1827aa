"""The closed loop: label what the model got wrong or refused, retrain, compare, promote.

A served answer knows its version (the request log), a label knows its answer
(``feedback``), a retrained version knows the labels and the alert that caused it
(its lineage), and a promotion is a statistical decision with its report. The
layer sits above :mod:`loopml.monitor` (it reads monitoring results and alerts)
and below :class:`loopml.Client`, the model server and the CLI. docs/loop.md
describes the loop, its commands and its safety rules.
"""
