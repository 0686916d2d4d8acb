"""Use cases the command line (and the coming HTTP server) call: one module per job.

Each service takes a store, a token client, a clock and plain arguments — never
argparse objects or the CLI's ``Context`` — and returns data its caller renders.
"""
