"""The pieces of the training loop that decide their own timing: the training state, the checkpointer,
the validation evaluator, the metrics-row policy, the status heartbeat and the progress display.

`metalm.trainer` wires them into one loop that reads top to bottom.
"""
