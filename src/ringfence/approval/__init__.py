"""Approvals: whether a command may run at all, separate from what the sandbox lets it do.

``shell`` turns a command line into simple commands with a real shell grammar
(tree-sitter-bash), ``safe`` knows which commands only read, ``rules`` holds the user's
prefix rules, and ``decide`` combines them under an approval policy.
"""
