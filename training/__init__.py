"""Training side: input data, the two-tower model, and the model artifact it exports.

Never imports ``serving`` (see DESIGN.md, dependency direction).
"""
