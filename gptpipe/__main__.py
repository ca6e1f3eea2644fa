from gptpipe.cli.app import main

main()
