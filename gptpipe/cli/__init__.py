"""The `gptpipe` command line: the app, shared options, and the commands that are not stages."""
