from gptpipe.cli import main

main()
